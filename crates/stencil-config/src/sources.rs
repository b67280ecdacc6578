//! `[[ship.sources]]`: sources declared in the config file with the Datadog Agent's log-config keys
//! (`path`, `service`, `source`, `tags`, `log_processing_rules`, …), checked and turned into the agent's
//! [`Source`]s. Every error names the file, the source's index and the key.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;
use stencil_agent::multiline::MultiLine;
use stencil_agent::processing::Rule;
use stencil_agent::{Source, SourceInput, StartPosition};

use crate::file::{ConfigError, ConfigFile};

/// One `[[ship.sources]]` table, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `file`, `tcp` or `stdin` (optional: the input key says it).
    #[serde(rename = "type")]
    kind: Option<String>,
    /// The `source` label of the source's metrics (default: its path, `tcp:ADDR` or `stdin`).
    name: Option<String>,
    /// A file path or glob.
    path: Option<String>,
    /// A TCP address to listen on, `IP:PORT`.
    tcp: Option<String>,
    /// With `type = "tcp"`: the port to listen on, on every interface (the Datadog Agent's key).
    port: Option<u16>,
    /// Read standard input.
    stdin: Option<bool>,
    service: Option<String>,
    source: Option<String>,
    #[serde(default, deserialize_with = "tags")]
    tags: Vec<String>,
    hostname: Option<String>,
    status: Option<String>,
    detect_status: Option<bool>,
    start_position: Option<String>,
    #[serde(default)]
    exclude_paths: Vec<String>,
    encoding: Option<String>,
    auto_multi_line_detection: Option<bool>,
    multi_line_flush_timeout: Option<String>,
    #[serde(default)]
    log_processing_rules: Vec<RuleConfig>,
}

/// One `[[ship.sources.log_processing_rules]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    pattern: String,
    replace_placeholder: Option<String>,
}

/// Tags as an array, or as one comma-separated string.
fn tags<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tags {
        List(Vec<String>),
        One(String),
    }
    Ok(match Tags::deserialize(d)? {
        Tags::List(l) => l,
        Tags::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// What a source takes from `[ship]` (or the flags) when it does not say: `service`, `source`,
/// `hostname`, `status`, `detect_status`; its `tags` are added to these.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// `service` of the logs.
    pub service: Option<String>,
    /// The `ddsource:` tag.
    pub source: Option<String>,
    /// The `hostname:` tag.
    pub hostname: Option<String>,
    /// Tags of every log (a source's own are added).
    pub tags: Vec<String>,
    /// Status when none is detected.
    pub status: String,
    /// Detect each log's status from its text.
    pub detect_status: bool,
}

impl Defaults {
    /// A source of `input` named `name` with these attributes.
    pub fn source(&self, name: String, input: SourceInput) -> Source {
        let mut s = Source::new(name, input);
        s.service = self.service.clone();
        s.source = self.source.clone();
        s.hostname = self.hostname.clone();
        s.tags = self.tags.clone();
        s.status = self.status.clone();
        s.detect_status = self.detect_status;
        s
    }
}

/// The Datadog statuses a source's `status` may name.
const STATUSES: [&str; 9] = [
    "emergency",
    "alert",
    "critical",
    "error",
    "warning",
    "notice",
    "info",
    "debug",
    "ok",
];

/// A status that is not one of the Datadog statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}; one of: {valid}", valid = STATUSES.join(", "))]
pub struct UnknownStatus(pub String);

/// Checks a status against the Datadog statuses (`warn` is taken for `warning`).
pub fn check_status(status: &str) -> Result<String, UnknownStatus> {
    let s = status.to_ascii_lowercase();
    let s = if s == "warn" { "warning".into() } else { s };
    if STATUSES.contains(&s.as_str()) {
        Ok(s)
    } else {
        Err(UnknownStatus(status.to_owned()))
    }
}

/// Reads `ship.sources` (an array of tables).
pub fn read(
    file: &ConfigFile,
    sub: &str,
    key: &str,
    v: &toml::Value,
) -> Result<Vec<(String, SourceConfig)>, ConfigError> {
    let toml::Value::Array(items) = v else {
        return Err(file.bad(
            sub,
            key,
            &format!(
                "expected an array of tables ([[{sub}.{key}]]), found {}",
                v.type_str()
            ),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{key}[{i}]");
            let config: SourceConfig = crate::file::value(file, sub, &at, item)?;
            Ok((file.at(sub, &at), config))
        })
        .collect()
}

impl SourceConfig {
    /// The agent's source. `at` prefixes every error (``--config FILE: `ship.sources[2]`: ``); TCP
    /// listeners are bound here, so that a busy port is an error at start.
    pub fn build(&self, at: &str, defaults: &Defaults) -> Result<Source, ConfigError> {
        self.build_with(at, defaults, &|addr| {
            std::net::TcpListener::bind(addr)
                .map(|l| SourceInput::Tcp(Arc::new(l)))
                .map_err(|e| format!("cannot listen on {addr}: {e}"))
        })
    }

    /// Every check of [`SourceConfig::build`], without binding a TCP port.
    pub fn check(&self, at: &str, defaults: &Defaults) -> Result<(), ConfigError> {
        self.build_with(at, defaults, &|_| Ok(SourceInput::Stdin))
            .map(drop)
    }

    fn build_with(
        &self,
        at: &str,
        defaults: &Defaults,
        listen: &dyn Fn(SocketAddr) -> Result<SourceInput, String>,
    ) -> Result<Source, ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Source {
            at: at.to_owned(),
            key: (!key.is_empty()).then(|| key.to_owned()),
            message,
        };
        let inputs = [
            self.path.is_some(),
            self.tcp.is_some() || self.port.is_some(),
            self.stdin == Some(true),
        ];
        if inputs.iter().filter(|x| **x).count() != 1 {
            return Err(bad(
                "",
                "give exactly one input: `path = \"/var/log/app/*.log\"`, `tcp = \"127.0.0.1:5170\"` (or `type = \"tcp\"` with `port`), or `stdin = true`".into(),
            ));
        }
        let (input, default_name) = if let Some(path) = &self.path {
            let exclude = self
                .exclude_paths
                .iter()
                .map(|g| {
                    glob::Pattern::new(g).map_err(|e| bad("exclude_paths", format!("{g:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            (
                SourceInput::Files {
                    include: vec![path.clone()],
                    exclude,
                },
                path.clone(),
            )
        } else if self.stdin == Some(true) {
            (SourceInput::Stdin, "stdin".to_string())
        } else {
            let addr: SocketAddr = match (&self.tcp, self.port) {
                (Some(a), None) => a
                    .parse()
                    .map_err(|e| bad("tcp", format!("{a:?} is not an IP:PORT address ({e})")))?,
                (None, Some(p)) => SocketAddr::from(([0, 0, 0, 0], p)),
                _ => return Err(bad("", "give `tcp` or `port`, not both".into())),
            };
            (
                listen(addr).map_err(|e| bad("tcp", e))?,
                format!("tcp:{addr}"),
            )
        };
        let expected = match (&self.path, self.stdin) {
            (Some(_), _) => "file",
            (None, Some(true)) => "stdin",
            _ => "tcp",
        };
        if let Some(kind) = &self.kind {
            if kind != expected {
                return Err(bad(
                    "type",
                    format!("{kind:?} does not match the input given ({expected}); valid types: file, tcp, stdin"),
                ));
            }
        }
        if !self.exclude_paths.is_empty() && expected != "file" {
            return Err(bad("exclude_paths", "only for a `path` source".into()));
        }
        let mut source = defaults.source(self.name.clone().unwrap_or(default_name), input);
        if let Some(v) = &self.service {
            source.service = Some(v.clone());
        }
        if let Some(v) = &self.source {
            source.source = Some(v.clone());
        }
        if let Some(v) = &self.hostname {
            source.hostname = Some(v.clone());
        }
        source.tags.extend(self.tags.iter().cloned());
        if let Some(v) = &self.status {
            source.status = check_status(v).map_err(|e| bad("status", e.to_string()))?;
        }
        if let Some(v) = self.detect_status {
            source.detect_status = v;
        }
        source.start_position = match self.start_position.as_deref() {
            None | Some("beginning") => StartPosition::Beginning,
            Some("end") => StartPosition::End,
            Some(other) => {
                return Err(bad(
                    "start_position",
                    format!("{other:?}: expected \"beginning\" or \"end\""),
                ))
            }
        };
        if source.start_position == StartPosition::End && expected != "file" {
            return Err(bad("start_position", "only for a `path` source".into()));
        }
        match self
            .encoding
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("utf-8" | "utf8") => {}
            Some(other) => {
                return Err(bad(
                    "encoding",
                    format!(
                    "{other:?} is not supported: lines are shipped as the bytes they are (utf-8)"
                ),
                ))
            }
        }
        if self.auto_multi_line_detection == Some(true) {
            source.multi_line = Some(MultiLine::Auto);
        }
        if let Some(t) = &self.multi_line_flush_timeout {
            let d = crate::file::parse_duration(t)
                .map_err(|e| bad("multi_line_flush_timeout", e.to_string()))?;
            if d.is_zero() || d > std::time::Duration::from_secs(600) {
                return Err(bad(
                    "multi_line_flush_timeout",
                    "must be between 1ms and 10m".into(),
                ));
            }
            source.multi_line_flush = d;
        }
        for (i, rule) in self.log_processing_rules.iter().enumerate() {
            let key = format!("log_processing_rules[{i}]");
            let pattern = regex::bytes::Regex::new(&rule.pattern)
                .map_err(|e| bad(&key, format!("pattern is not a valid regex: {e}")))?;
            if rule.replace_placeholder.is_some() && rule.kind != "mask_sequences" {
                return Err(bad(
                    &key,
                    "replace_placeholder is for mask_sequences rules".into(),
                ));
            }
            let name = rule.name.clone();
            match rule.kind.as_str() {
                "exclude_at_match" => source.rules.push(Rule::ExcludeAtMatch { name, pattern }),
                "include_at_match" => source.rules.push(Rule::IncludeAtMatch { name, pattern }),
                "mask_sequences" => {
                    let Some(placeholder) = &rule.replace_placeholder else {
                        return Err(bad(&key, "mask_sequences needs replace_placeholder".into()));
                    };
                    source.rules.push(Rule::MaskSequences {
                        name,
                        pattern,
                        placeholder: placeholder.as_bytes().to_vec(),
                    });
                }
                // An explicit rule wins over the automatic detection, as in the Datadog Agent.
                "multi_line" => source.multi_line = Some(MultiLine::Pattern(pattern)),
                other => {
                    return Err(bad(
                        &key,
                        format!("unknown type {other:?}; valid types: exclude_at_match, include_at_match, mask_sequences, multi_line"),
                    ))
                }
            }
        }
        Ok(source)
    }
}
