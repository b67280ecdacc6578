//! `--config FILE`: a TOML file with one table per subcommand (`[ship]`, `[intake]`) whose keys name the
//! subcommand's flags with `_` for `-` (`batch_lines = 500`, `tags = ["env:prod"]`, `once = true`;
//! repeatable flags take arrays: `api_keys = ["a", "b"]`, `endpoints = ["https://a", "https://b"]`; a
//! repeatable flag's singular name works too: `endpoint = "https://a"`).
//!
//! Precedence: the file < `STENCIL_…` environment variables < command-line flags. A key is applied only
//! where clap found no value from the environment or the command line. Unknown tables and keys are errors
//! that name the key and list what is valid.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::CommandFactory;

/// The arguments with the config file's values added as flags where nothing better was given.
pub fn apply<C: CommandFactory>(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Ok(matches) = C::command().try_get_matches_from(&args) else {
        return Ok(args); // let clap report the usage error itself
    };
    let Some(path) = matches.get_one::<PathBuf>("config") else {
        return Ok(args);
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("--config {}: not valid TOML: {e}", path.display()))?;
    let Some((sub, sub_matches)) = matches.subcommand() else {
        return Ok(args);
    };
    let command = C::command();
    let valid_tables: Vec<String> = command
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    for name in table.keys() {
        if !valid_tables.contains(name) {
            return Err(format!(
                "--config {}: unknown table [{name}]; valid tables: {}",
                path.display(),
                valid_tables
                    .iter()
                    .map(|t| format!("[{t}]"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let Some(section) = table.get(sub).and_then(toml::Value::as_table) else {
        return Ok(args);
    };
    let Some(subcommand) = command.find_subcommand(sub) else {
        return Ok(args);
    };
    // Config keys are argument ids (the field names); the flag to inject is the argument's long name.
    let flags: Vec<(String, String)> = subcommand
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| (a.get_id().to_string(), l.to_owned())))
        .collect();
    let mut out = args;
    for (key, value) in section {
        // A key is the argument's id or its flag's name (`endpoints` or `endpoint`).
        let Some((id, long)) = flags
            .iter()
            .find(|(id, long)| id == key || long.replace('-', "_") == *key)
        else {
            return Err(format!(
                "--config {}: unknown key `{sub}.{key}`; valid keys: {}",
                path.display(),
                flags
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        if matches!(
            sub_matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let flag = format!("--{long}");
        let scalar = |v: &toml::Value| -> Result<String, String> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                other => Err(format!(
                    "--config {}: `{sub}.{key}` must be a string or a number, not {}",
                    path.display(),
                    other.type_str()
                )),
            }
        };
        match value {
            toml::Value::Boolean(true) => out.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                for item in items {
                    out.push(flag.clone().into());
                    out.push(scalar(item)?.into());
                }
            }
            v => {
                out.push(flag.into());
                out.push(scalar(v)?.into());
            }
        }
    }
    Ok(out)
}
