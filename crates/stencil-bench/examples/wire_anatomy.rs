//! Development aid: where the bytes of Stencil v3 payloads go, for one file and batch size.
//! `cargo run --release -p stencil-bench --example wire_anatomy -- FILE [BATCH]`

use prost::Message;
use stencil_codec::datum::{Content, Datum, Value};
use stencil_codec::{BatchEncoder, Compression, Generation};
use stencil_patterns::{Engine, EngineConfig, Meta};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("a file");
    let batch: usize = args.next().and_then(|b| b.parse().ok()).unwrap_or(100);
    let bytes = std::fs::read(&path).expect("readable");
    let lines: Vec<&[u8]> = bytes
        .strip_suffix(b"\n")
        .unwrap_or(&bytes)
        .split(|&b| b == b'\n')
        .collect();
    let mut engine = Engine::new(EngineConfig::default());
    let (
        mut raw_logs,
        mut pattern_logs,
        mut values,
        mut str_bytes,
        mut dict_vals,
        mut ints,
        mut defines_bytes,
    ) = (0, 0, 0, 0, 0, 0, 0usize);
    let (mut z1, mut z3, mut plain, mut raw_z1) = (0usize, 0usize, 0usize, 0usize);
    for (n, chunk) in lines.chunks(batch).enumerate() {
        let mut datums = Vec::new();
        for (i, l) in chunk.iter().enumerate() {
            engine.encode(
                l,
                &Meta {
                    timestamp: 1_700_000_000_000 + (n * batch + i) as i64 * 7,
                    ..Meta::default()
                },
                &mut datums,
            );
        }
        for d in &datums {
            match d {
                Datum::Log(log) => match &log.content {
                    Content::Raw(_) => raw_logs += 1,
                    Content::Pattern { values: v, .. } => {
                        pattern_logs += 1;
                        for x in v {
                            values += 1;
                            match &x.value {
                                Value::Str(s) => str_bytes += s.len(),
                                Value::Dict(_) => dict_vals += 1,
                                Value::Int(_) => ints += 1,
                                _ => {}
                            }
                        }
                    }
                },
                Datum::PatternDefine(p) => defines_bytes += p.template.len(),
                Datum::DictDefine(e) => defines_bytes += e.value.len(),
                _ => {}
            }
        }
        let serialized = BatchEncoder::new(Generation::V3, Compression::Identity)
            .serialize(&datums)
            .expect("encodes");
        plain += serialized.len();
        if std::env::var("DUMP_BATCH")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            == Some(n)
        {
            for d in &datums {
                println!("{d:?}");
            }
        }
        z1 += Compression::ZSTD.compress(&serialized).expect("zstd").len();
        z3 += Compression::Zstd { level: 3 }
            .compress(&serialized)
            .expect("zstd")
            .len();
        let mut text = Vec::new();
        for l in chunk {
            text.extend_from_slice(l);
            text.push(b'\n');
        }
        raw_z1 += Compression::ZSTD.compress(&text).expect("zstd").len();
    }
    let _ = stencil_proto::v3::Log::default().encoded_len();
    println!("{path} batch {batch}: raw logs {raw_logs}, pattern logs {pattern_logs}, values {values} (inline string bytes {str_bytes}, dict refs {dict_vals}, ints {ints}), define text bytes {defines_bytes}");
    println!("serialized {plain} B; zstd-1 {z1} B; zstd-3 {z3} B; raw lines zstd-1 {raw_z1} B");
}
