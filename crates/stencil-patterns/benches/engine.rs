//! Criterion benchmarks of the pattern engine's hot path on the 12 Loghub samples (read from
//! `STENCIL_CORPUS`, default `../shared/corpus` relative to the workspace root; nothing is copied into
//! the repository): tokenizing alone (without and with the memo of recent chunks), and tokenizing,
//! mining and encoding with a warm engine (the steady state of a long-running agent). Throughput is
//! reported in lines per second of input.
//!
//! `cargo bench -p stencil-patterns`; compare two builds with `--save-baseline` / `--baseline`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stencil_patterns::token::{tokenize, Token, Tokenizer};
use stencil_patterns::{Engine, EngineConfig, Meta};

fn corpus() -> Vec<String> {
    let dir = std::env::var_os("STENCIL_CORPUS")
        .map_or_else(|| PathBuf::from("../shared/corpus"), PathBuf::from);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(dir);
    let loghub = root.join("loghub-2k");
    let mut systems: Vec<PathBuf> = std::fs::read_dir(&loghub)
        .unwrap_or_else(|e| panic!("{}: {e} (set STENCIL_CORPUS)", loghub.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    systems.sort();
    let mut lines = Vec::new();
    for system in systems {
        let Some(name) = system.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Ok(text) = std::fs::read(system.join(format!("{name}_2k.log"))) {
            lines.extend(String::from_utf8_lossy(&text).lines().map(str::to_owned));
        }
    }
    assert!(
        !lines.is_empty(),
        "no corpus lines under {}",
        loghub.display()
    );
    lines
}

fn engine(c: &mut Criterion) {
    let lines = corpus();
    let mut group = c.benchmark_group("loghub-2k");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.sample_size(20);

    let mut tokens: Vec<Token> = Vec::with_capacity(512);
    group.bench_function("tokenize", |b| {
        b.iter(|| {
            let mut n = 0;
            for l in &lines {
                tokenize(l, &mut tokens);
                n += tokens.len();
            }
            n
        })
    });

    // As the engine tokenizes: with the memo of recent chunks.
    let mut tokenizer = Tokenizer::new();
    group.bench_function("tokenize-memo", |b| {
        b.iter(|| {
            let mut n = 0;
            for l in &lines {
                tokenizer.tokenize(l, &mut tokens);
                n += tokens.len();
            }
            n
        })
    });

    let mut warm = Engine::new(EngineConfig::default());
    let mut out = Vec::with_capacity(4096);
    for l in &lines {
        warm.encode(l.as_bytes(), &Meta::default(), &mut out);
    }
    group.bench_function("encode-steady", |b| {
        b.iter(|| {
            let mut n = 0;
            for chunk in lines.chunks(1000) {
                out.clear();
                for l in chunk {
                    warm.encode(l.as_bytes(), &Meta::default(), &mut out);
                }
                n += out.len();
            }
            n
        })
    });
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
