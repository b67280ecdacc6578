//! `--config FILE`: a TOML file with one table per subcommand (`[ship]`, `[intake]`) whose keys are the
//! subcommand's flags with `_` for `-` (`batch_lines = 500`, `tags = ["env:prod"]`, `once = true`; a
//! repeatable flag takes an array under its plural or singular name: `endpoints = [...]` or
//! `endpoint = "…"`), plus what only a file can say (`[[ship.sources]]`).
//!
//! Values are typed and checked where they are read, and never pass through the command line: an error
//! names the file, the key and what was expected. Sizes and durations take units (`batch_bytes =
//! "5MB"`, `batch_wait = "500ms"`); a bare number is in the unit the key's name says.
//!
//! Precedence: the file < `STENCIL_…` environment variables < command-line flags. A key is applied only
//! where clap found no value from the environment or the command line. Unknown tables and keys are errors
//! that list what is valid.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::de::DeserializeOwned;

/// What is wrong with a config file; every message names the file, and the key where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("--config {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// The file is not TOML.
    #[error("--config {}: not valid TOML: {error}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        error: Box<toml::de::Error>,
    },
    /// A table that no subcommand has.
    #[error("--config {}: unknown table [{name}]; valid tables: {valid}", path.display())]
    UnknownTable {
        /// The file.
        path: PathBuf,
        /// The table.
        name: String,
        /// The tables there are.
        valid: String,
    },
    /// A subcommand's entry that is not a table.
    #[error("--config {}: `{sub}` must be a table ([{sub}]), not {found}", path.display())]
    NotATable {
        /// The file.
        path: PathBuf,
        /// The subcommand.
        sub: String,
        /// What it is instead.
        found: &'static str,
    },
    /// A key whose value is not what the key takes.
    #[error("--config {}: `{at}`: {expected}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// `table.key`.
        at: String,
        /// What was expected (and found).
        expected: String,
    },
    /// A key the table does not have.
    #[error("--config {}: unknown key `{at}`; valid keys: {valid}", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// `table.key`.
        at: String,
        /// The keys there are.
        valid: String,
    },
    /// A `[[ship.sources]]` entry that is inconsistent or names something invalid.
    #[error("{at}{}{message}", key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default())]
    Source {
        /// Where the entry is (``--config FILE: `ship.sources[2]`: ``), empty for the flags' sources.
        at: String,
        /// The key of the entry, if one is at fault.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
}

/// Why a size or a duration does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// No number at the start.
    #[error("{0:?} does not start with a number")]
    NotANumber(String),
    /// A unit this kind of value does not have.
    #[error("unknown unit {unit:?} ({valid})")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The units there are.
        valid: &'static str,
    },
    /// A duration needs its unit.
    #[error("{0:?} has no unit (ms, s, m, h)")]
    NoUnit(String),
    /// Beyond what the value can hold.
    #[error("{0:?} is out of range")]
    OutOfRange(String),
}

/// A loaded config file.
pub struct ConfigFile {
    path: PathBuf,
    table: toml::Table,
}

impl ConfigFile {
    /// Reads and parses `path`, and checks that every table is one of `subcommands`.
    pub fn load(path: &Path, subcommands: &[&str]) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(path, &text, subcommands)
    }

    /// Parses `text`, read from `path` (which the errors name).
    pub fn parse(
        path: impl AsRef<Path>,
        text: &str,
        subcommands: &[&str],
    ) -> Result<ConfigFile, ConfigError> {
        let path = path.as_ref();
        let table: toml::Table = text.parse().map_err(|e| ConfigError::Toml {
            path: path.to_owned(),
            error: Box::new(e),
        })?;
        for name in table.keys() {
            if !subcommands.contains(&name.as_str()) {
                return Err(ConfigError::UnknownTable {
                    path: path.to_owned(),
                    name: name.clone(),
                    valid: subcommands
                        .iter()
                        .map(|t| format!("[{t}]"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        Ok(ConfigFile {
            path: path.to_owned(),
            table,
        })
    }

    /// The keys of `[sub]` (none when the table is absent).
    pub fn section(&self, sub: &str) -> Result<Vec<(String, toml::Value)>, ConfigError> {
        match self.table.get(sub) {
            None => Ok(Vec::new()),
            Some(toml::Value::Table(t)) => {
                Ok(t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            }
            Some(other) => Err(ConfigError::NotATable {
                path: self.path.clone(),
                sub: sub.to_owned(),
                found: other.type_str(),
            }),
        }
    }

    /// The error for a value of `sub.key` that is not what `expected` says.
    pub fn bad(&self, sub: &str, key: &str, expected: &dyn std::fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            at: format!("{sub}.{key}"),
            expected: expected.to_string(),
        }
    }

    /// The error for an unknown key of `[sub]`.
    pub fn unknown(&self, sub: &str, key: &str, valid: &[&str]) -> ConfigError {
        ConfigError::UnknownKey {
            path: self.path.clone(),
            at: format!("{sub}.{key}"),
            valid: valid.join(", "),
        }
    }

    /// How an error names `sub.key` of this file, with the separator after it
    /// (`--config FILE: \`ship.key\`: `).
    pub fn at(&self, sub: &str, key: &str) -> String {
        format!("--config {}: `{sub}.{key}`: ", self.path.display())
    }
}

/// True when the argument `id` got its value from the command line or the environment (the file must
/// not override it).
pub fn explicit(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches
            .try_get_raw(id)
            .ok()
            .and_then(|_| matches.value_source(id)),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Any value serde can read from TOML (strings, numbers, booleans, arrays, tables).
pub fn value<T: DeserializeOwned>(
    file: &ConfigFile,
    sub: &str,
    key: &str,
    v: &toml::Value,
) -> Result<T, ConfigError> {
    v.clone().try_into().map_err(|e: toml::de::Error| {
        file.bad(sub, key, &e.to_string().trim_end().replace('\n', " "))
    })
}

/// A list given as an array, or as one value (one item; for `tags`, comma-separated items).
pub fn list<T: DeserializeOwned>(
    file: &ConfigFile,
    sub: &str,
    key: &str,
    v: &toml::Value,
) -> Result<Vec<T>, ConfigError> {
    match v {
        toml::Value::Array(_) => value(file, sub, key, v),
        toml::Value::String(s) if key == "tags" => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| value(file, sub, key, &toml::Value::String(t.to_owned())))
            .collect(),
        one => Ok(vec![value(file, sub, key, one)?]),
    }
}

/// A size: a number of bytes, or a string with a unit (`5MB`, `512KiB`, `1 GiB`).
pub fn size<T: TryFrom<u64>>(
    file: &ConfigFile,
    sub: &str,
    key: &str,
    v: &toml::Value,
) -> Result<T, ConfigError> {
    let bytes = match v {
        toml::Value::Integer(i) => u64::try_from(*i).map_err(|_| "a negative size".to_string()),
        toml::Value::String(s) => parse_size(s).map_err(|e| e.to_string()),
        other => Err(format!("found {}", other.type_str())),
    }
    .map_err(|e| {
        file.bad(
            sub,
            key,
            &format!("expected a size such as 5MB, 512KiB or a number of bytes ({e})"),
        )
    })?;
    T::try_from(bytes).map_err(|_| file.bad(sub, key, &"too large"))
}

/// A size in MiB: a number of MiB, or a string with a unit (`512MiB`, `1GiB`), rounded up to whole MiB.
pub fn mib<T: TryFrom<u64>>(
    file: &ConfigFile,
    sub: &str,
    key: &str,
    v: &toml::Value,
) -> Result<T, ConfigError> {
    let n = match v {
        toml::Value::String(_) => size::<u64>(file, sub, key, v)?.div_ceil(1 << 20),
        _ => value::<u64>(file, sub, key, v)?,
    };
    T::try_from(n).map_err(|_| file.bad(sub, key, &"too large"))
}

/// A duration in whole `unit`s: a number in that unit, or a string with its own (`500ms`, `5s`, `2m`,
/// `1h`).
pub fn duration_in(
    file: &ConfigFile,
    sub: &str,
    key: &str,
    v: &toml::Value,
    unit: Duration,
) -> Result<u64, ConfigError> {
    match v {
        toml::Value::Integer(i) => u64::try_from(*i)
            .map_err(|_| file.bad(sub, key, &"expected a duration, found a negative number")),
        toml::Value::String(s) => {
            let d = parse_duration(s).map_err(|e| {
                file.bad(
                    sub,
                    key,
                    &format!("expected a duration such as 500ms, 5s or 2m ({e})"),
                )
            })?;
            Ok((d.as_nanos() / unit.as_nanos().max(1)) as u64)
        }
        other => Err(file.bad(
            sub,
            key,
            &format!("expected a duration such as 5s, found {}", other.type_str()),
        )),
    }
}

/// A duration in milliseconds (see [`duration_in`]).
pub fn millis(
    file: &ConfigFile,
    sub: &str,
    key: &str,
    v: &toml::Value,
) -> Result<u64, ConfigError> {
    duration_in(file, sub, key, v, Duration::from_millis(1))
}

/// A duration in seconds (see [`duration_in`]).
pub fn secs(file: &ConfigFile, sub: &str, key: &str, v: &toml::Value) -> Result<u64, ConfigError> {
    duration_in(file, sub, key, v, Duration::from_secs(1))
}

/// The number at the start of `text` and the unit after it (`"1.5 GiB"` → `(1.5, "GiB")`).
fn number_and_unit(text: &str) -> Result<(f64, &str), UnitError> {
    let t = text.trim();
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: f64 = number
        .parse()
        .map_err(|_| UnitError::NotANumber(text.to_owned()))?;
    Ok((number, unit.trim()))
}

/// `5MB` (10^6), `5MiB` (2^20), `512KiB`, `1 GB`, `100B`, `100`.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let (number, unit) = number_and_unit(text)?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => {
            return Err(UnitError::UnknownUnit {
                unit: other.to_owned(),
                valid: "B, KB, MB, GB, KiB, MiB, GiB",
            })
        }
    };
    let bytes = number * factor as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(UnitError::OutOfRange(text.to_owned()));
    }
    Ok(bytes.round() as u64)
}

/// `500ms`, `5s`, `2m`, `1h`, `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let (number, unit) = number_and_unit(text)?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        "" => return Err(UnitError::NoUnit(text.to_owned())),
        other => {
            return Err(UnitError::UnknownUnit {
                unit: other.to_owned(),
                valid: "ms, s, m, h",
            })
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| UnitError::OutOfRange(text.to_owned()))
}

/// Where the values that the config file set came from, to name them in the errors of later checks.
#[derive(Debug, Default, Clone)]
pub struct Origins(pub Vec<(&'static str, String)>);

impl Origins {
    /// How to name the setting `field` (flag `--flag`) in an error: the file and key when the file set
    /// it, the flag otherwise.
    pub fn name(&self, field: &str, flag: &str) -> String {
        match self.0.iter().find(|(f, _)| *f == field) {
            Some((_, at)) => at.trim_end().trim_end_matches(':').to_owned(),
            None => format!("--{flag}"),
        }
    }
}

/// Applies the keys of `[$sub]` to `$args`, each through its reader (`file::value`, `file::list`,
/// `file::size`, `file::mib`, `file::millis`, `file::secs`, or another function of the same shape), skipping those the command line or environment already set. Keys may have aliases
/// (`"endpoint"` for `endpoints`, `"batch_wait"` for `batch_wait_ms`). Evaluates to the [`Origins`] of
/// what it applied.
#[macro_export]
macro_rules! apply_keys {
    ($file:expr, $sub:literal, $matches:expr, $args:expr;
     $( $field:ident $(| $alias:literal)* => $reader:path ),* $(,)?) => {{
        let file: &$crate::file::ConfigFile = $file;
        let mut applied: Vec<(&'static str, String)> = Vec::new();
        for (key, v) in file.section($sub)? {
            match key.as_str() {
                $( k if k == stringify!($field) $(|| k == $alias)* => {
                    if !$crate::file::explicit($matches, stringify!($field)) {
                        $args.$field = $reader(file, $sub, &key, &v)?;
                        applied.push((stringify!($field), file.at($sub, &key)));
                    }
                } )*
                other => {
                    return Err(file.unknown($sub, other, &[$(stringify!($field)),*]).into());
                }
            }
        }
        $crate::file::Origins(applied)
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_take_units() {
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(matches!(
            parse_size("5 parsecs"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(parse_size("MB").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(matches!(parse_duration("5"), Err(UnitError::NoUnit(_))));
        assert!(parse_duration("5")
            .unwrap_err()
            .to_string()
            .contains("no unit"));
    }
}
