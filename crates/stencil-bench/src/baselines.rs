//! The alternatives `stencil bench wire` compares Stencil with, built here from the same lines and the same
//! metadata: raw lines (one batch = the lines with their `\n`), the Datadog HTTP JSON transport (a JSON array
//! of `{message, status, timestamp, hostname, service, ddsource, ddtags}`), and OTLP logs (a protobuf
//! `LogsData`, one record per line). Each builder returns the *uncompressed* payload; the benchmark
//! compresses it per batch. The unit tests decode every payload back to its lines, so a baseline cannot win
//! by dropping data.

use prost::Message;
use serde_json::json;

/// Minimal OTLP logs messages (field numbers from the public OpenTelemetry protocol, `logs.proto` and
/// `common.proto`): only the fields a file shipper fills.
pub mod otlp {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogsData {
        #[prost(message, repeated, tag = "1")]
        pub resource_logs: Vec<ResourceLogs>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceLogs {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_logs: Vec<ScopeLogs>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeLogs {
        #[prost(message, repeated, tag = "2")]
        pub log_records: Vec<LogRecord>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogRecord {
        #[prost(fixed64, tag = "1")]
        pub time_unix_nano: u64,
        #[prost(int32, tag = "2")]
        pub severity_number: i32,
        #[prost(string, tag = "3")]
        pub severity_text: String,
        #[prost(message, optional, tag = "5")]
        pub body: Option<AnyValue>,
        #[prost(message, repeated, tag = "6")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "11")]
        pub observed_time_unix_nano: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(string, tag = "1")]
        pub string_value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
}

/// The metadata every method carries for every line (Stencil carries the same through its dictionary).
#[derive(Debug, Clone)]
pub struct Metadata {
    /// `hostname` (HTTP JSON), `host.name` (OTLP resource).
    pub host: String,
    /// `service` (HTTP JSON), `service.name` (OTLP resource).
    pub service: String,
    /// `ddsource` (HTTP JSON).
    pub source: String,
    /// `status` (HTTP JSON), severity text (OTLP).
    pub status: String,
    /// The source file's path: `filename:` tag (HTTP JSON), `log.file.path` attribute (OTLP).
    pub file: String,
}

impl Metadata {
    /// The comma-joined tag string, as the agent sends it.
    pub fn ddtags(&self) -> String {
        format!("filename:{},env:bench", self.file)
    }
}

/// One line and its timestamp (milliseconds since the epoch).
pub type Line<'a> = (&'a [u8], i64);

/// Raw lines: each line and its `\n`, as in the file.
pub fn raw_lines(lines: &[Line<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|(l, _)| l.len() + 1).sum());
    for (line, _) in lines {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// The Datadog HTTP JSON transport body for one batch. Invalid UTF-8 is replaced (U+FFFD), as JSON
/// requires: this baseline is lossy where Stencil is not, which only flatters the baseline.
pub fn http_json(lines: &[Line<'_>], meta: &Metadata) -> Result<Vec<u8>, String> {
    let ddtags = meta.ddtags();
    let body: Vec<serde_json::Value> = lines
        .iter()
        .map(|(line, ts)| {
            json!({
                "message": String::from_utf8_lossy(line),
                "status": meta.status,
                "timestamp": ts,
                "hostname": meta.host,
                "service": meta.service,
                "ddsource": meta.source,
                "ddtags": ddtags,
            })
        })
        .collect();
    serde_json::to_vec(&body).map_err(|e| format!("HTTP JSON baseline: {e}"))
}

fn attribute(key: &str, value: &str) -> otlp::KeyValue {
    otlp::KeyValue {
        key: key.into(),
        value: Some(otlp::AnyValue {
            string_value: value.into(),
        }),
    }
}

/// An OTLP `LogsData` for one batch: one resource (service and host), one scope, one record per line with
/// its timestamps, severity, body and file path. Invalid UTF-8 is replaced, as protobuf strings require.
pub fn otlp(lines: &[Line<'_>], meta: &Metadata) -> Vec<u8> {
    let records = lines
        .iter()
        .map(|(line, ts)| {
            let nanos = (*ts as u64).saturating_mul(1_000_000);
            otlp::LogRecord {
                time_unix_nano: nanos,
                observed_time_unix_nano: nanos,
                severity_number: 9,
                severity_text: meta.status.clone(),
                body: Some(otlp::AnyValue {
                    string_value: String::from_utf8_lossy(line).into_owned(),
                }),
                attributes: vec![attribute("log.file.path", &meta.file)],
            }
        })
        .collect();
    otlp::LogsData {
        resource_logs: vec![otlp::ResourceLogs {
            resource: Some(otlp::Resource {
                attributes: vec![
                    attribute("service.name", &meta.service),
                    attribute("host.name", &meta.host),
                ],
            }),
            scope_logs: vec![otlp::ScopeLogs {
                log_records: records,
            }],
        }],
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stencil_codec::Compression;

    fn meta() -> Metadata {
        Metadata {
            host: "h".into(),
            service: "svc".into(),
            source: "src".into(),
            status: "info".into(),
            file: "/var/log/app.log".into(),
        }
    }

    fn sample() -> Vec<(Vec<u8>, i64)> {
        [
            "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 terminating",
            "",
            "  trailing spaces and \"quotes\" \\ and a tab\t ",
            "non-BMP 😀 and U+FFFD \u{fffd}",
        ]
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_bytes().to_vec(), 1_700_000_000_000 + i as i64 * 13))
        .collect()
    }

    fn zstd_round_trip(payload: &[u8]) -> Vec<u8> {
        let packed = Compression::ZSTD.compress(payload).expect("compresses");
        assert!(packed.len() < payload.len() + 64);
        Compression::ZSTD
            .decompress(&packed, 1 << 20)
            .expect("decompresses")
    }

    #[test]
    fn raw_lines_round_trip() {
        let owned = sample();
        let lines: Vec<Line<'_>> = owned.iter().map(|(l, t)| (l.as_slice(), *t)).collect();
        let back = zstd_round_trip(&raw_lines(&lines));
        let split = crate::split_lines(&back);
        assert_eq!(split.len(), lines.len());
        for (got, (want, _)) in split.iter().zip(&lines) {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn http_json_round_trips_every_field() {
        let owned = sample();
        let lines: Vec<Line<'_>> = owned.iter().map(|(l, t)| (l.as_slice(), *t)).collect();
        let m = meta();
        let back = zstd_round_trip(&http_json(&lines, &m).expect("encodes"));
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&back).expect("JSON array");
        assert_eq!(parsed.len(), lines.len());
        for (p, (line, ts)) in parsed.iter().zip(&lines) {
            assert_eq!(p["message"].as_str().expect("message").as_bytes(), *line);
            assert_eq!(p["timestamp"].as_i64(), Some(*ts));
            assert_eq!(p["status"], "info");
            assert_eq!(p["hostname"], "h");
            assert_eq!(p["service"], "svc");
            assert_eq!(p["ddsource"], "src");
            assert_eq!(p["ddtags"], "filename:/var/log/app.log,env:bench");
        }
    }

    #[test]
    fn otlp_round_trips_every_field() {
        let owned = sample();
        let lines: Vec<Line<'_>> = owned.iter().map(|(l, t)| (l.as_slice(), *t)).collect();
        let m = meta();
        let back = zstd_round_trip(&otlp(&lines, &m));
        let data = otlp::LogsData::decode(back.as_slice()).expect("LogsData");
        let rl = &data.resource_logs[0];
        let attrs = &rl.resource.as_ref().expect("resource").attributes;
        assert_eq!(attrs[0].key, "service.name");
        assert_eq!(attrs[1].value.as_ref().expect("value").string_value, "h");
        let records = &rl.scope_logs[0].log_records;
        assert_eq!(records.len(), lines.len());
        for (r, (line, ts)) in records.iter().zip(&lines) {
            assert_eq!(
                r.body.as_ref().expect("body").string_value.as_bytes(),
                *line
            );
            assert_eq!(r.time_unix_nano, *ts as u64 * 1_000_000);
            assert_eq!(r.severity_text, "info");
            assert_eq!(
                r.attributes[0].value.as_ref().expect("value").string_value,
                "/var/log/app.log"
            );
        }
    }
}
