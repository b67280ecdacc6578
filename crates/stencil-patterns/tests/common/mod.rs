//! Round-trip harness: engine → datums → v3 batches → the real decoder → bytes, compared with the input.

#![allow(dead_code)]

use stencil_codec::datum::Datum;
use stencil_patterns::{Engine, EngineConfig, Meta};

/// Splits file bytes into lines without their `\n`; the flag says whether the last line had one.
pub fn split_lines(bytes: &[u8]) -> (Vec<&[u8]>, bool) {
    if bytes.is_empty() {
        return (Vec::new(), true);
    }
    let final_newline = bytes.ends_with(b"\n");
    let body = if final_newline {
        &bytes[..bytes.len() - 1]
    } else {
        bytes
    };
    (body.split(|&b| b == b'\n').collect(), final_newline)
}

/// Encodes `lines` through the engine and the real codec and returns the rebuilt records.
pub fn round_trip(lines: &[&[u8]], config: EngineConfig, batch: usize) -> Vec<Vec<u8>> {
    stencil_patterns::roundtrip::round_trip(lines, config, batch)
        .unwrap_or_else(|e| panic!("round trip failed: {e}"))
        .rebuilt
}

/// Asserts that every line comes back byte for byte.
pub fn assert_lossless(
    lines: &[&[u8]],
    config: EngineConfig,
    batch: usize,
    what: &str,
) -> Vec<Datum> {
    let rebuilt = round_trip(lines, config.clone(), batch);
    assert_eq!(rebuilt.len(), lines.len(), "{what}: one record per line");
    for (i, (got, want)) in rebuilt.iter().zip(lines).enumerate() {
        assert_eq!(got.as_slice(), *want, "{what}: line {} differs", i + 1);
    }
    encode_all(lines, config)
}

/// Every datum a fresh engine emits for `lines`.
pub fn encode_all(lines: &[&[u8]], config: EngineConfig) -> Vec<Datum> {
    let mut engine = Engine::new(config);
    let mut out = Vec::new();
    for line in lines {
        engine.encode(line, &Meta::default(), &mut out);
    }
    out
}

/// The stream validator: every id a Log references was defined earlier and not deleted since (O1), each
/// record is deletes, then defines, then exactly one Log (O2, O6), and no id is defined twice except a
/// pattern widening (same id) or a re-definition after a delete.
pub fn validate(datums: &[Datum]) {
    use std::collections::HashSet;
    use stencil_codec::datum::{Content, JsonContext, Value};
    let (mut patterns, mut dict, mut schemas) = (HashSet::new(), HashSet::new(), HashSet::new());
    let (mut ever_dict, mut ever_schema) = (HashSet::new(), HashSet::new());
    let mut phase = 0; // 0 deletes, 1 defines, 2 after a log
    for d in datums {
        match d {
            Datum::PatternDelete { id } | Datum::DictDelete { id } | Datum::SchemaDelete { id } => {
                assert!(
                    phase == 0 || phase == 2,
                    "a delete after a define in the same record"
                );
                phase = 0;
                let removed = match d {
                    Datum::PatternDelete { .. } => patterns.remove(id),
                    Datum::DictDelete { .. } => dict.remove(id),
                    _ => schemas.remove(id),
                };
                assert!(removed, "delete of an id that is not live: {d:?}");
            }
            Datum::PatternDefine(p) => {
                phase = 1;
                patterns.insert(p.id);
            }
            Datum::DictDefine(e) => {
                phase = 1;
                assert!(
                    dict.insert(e.id) && ever_dict.insert(e.id),
                    "dictionary id {} reused",
                    e.id
                );
            }
            Datum::SchemaDefine(s) => {
                phase = 1;
                for k in s.keys.iter().chain([&s.message_key]) {
                    assert!(dict.contains(k), "schema {} uses undefined key {k}", s.id);
                }
                assert!(
                    schemas.insert(s.id) && ever_schema.insert(s.id),
                    "schema id {} reused",
                    s.id
                );
            }
            Datum::Log(log) => {
                phase = 2;
                for v in [&log.status, &log.service, &log.tags].into_iter().flatten() {
                    if let Value::Dict(id) = v {
                        assert!(
                            dict.contains(id),
                            "log references undefined dictionary id {id}"
                        );
                    }
                }
                if let Content::Pattern { id, values } = &log.content {
                    assert!(
                        patterns.contains(id),
                        "log references undefined pattern {id}"
                    );
                    for v in values {
                        if let Value::Dict(id) = v.value {
                            assert!(
                                dict.contains(&id),
                                "value references undefined dictionary id {id}"
                            );
                        }
                    }
                }
                if let Some(JsonContext::Columns { schema, .. }) = &log.json {
                    assert!(
                        schemas.contains(schema),
                        "log references undefined schema {schema}"
                    );
                }
            }
        }
    }
}
