//! The engine's step of `stencil bench pipeline` alone, for profilers and instruction counters.
//!
//! Timings on a shared machine swing by ±15 % from one run to the next, so a change of a few per cent
//! cannot be seen in them. An instruction count can: run this under
//! `valgrind --tool=cachegrind --cache-sim=no` (or `perf record`) and compare the totals of two builds.
//!
//! ```text
//! REPEAT=5 cargo run --release -p stencil-bench --example engine_probe -- ../shared/corpus/loghub-2k/*/*_2k.log
//! ```
//!
//! Each file's lines are repeated `REPEAT` times in a row (default 1), as `bench pipeline` repeats its
//! inputs, so that most lines meet a pattern they have already learned; the whole is encoded `ROUNDS`
//! times (default 1), each round by a fresh engine, exactly as `bench pipeline` measures it
//! ([`stencil_bench::engine_pass`]: tokenize, mine, encode and serialize v3 batches of 1000 lines). It
//! prints the lines and the wall time.
//!
//! With `CHECKSUM=1` it also prints a hash of every serialized batch of one more round, so that a change
//! meant only to make the engine faster can be shown to leave its output byte for byte the same.

use std::hash::{DefaultHasher, Hasher};

use stencil_codec::{BatchEncoder, Compression, Generation};
use stencil_patterns::{Engine, EngineConfig, Meta};

fn main() -> Result<(), String> {
    let number = |name: &str, default: usize| -> Result<usize, String> {
        match std::env::var(name) {
            Ok(v) => v
                .parse()
                .map_err(|e| format!("{name}={v:?} is not a count: {e}")),
            Err(_) => Ok(default),
        }
    };
    let repeat = number("REPEAT", 1)?;
    let rounds = number("ROUNDS", 1)?;
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        return Err("usage: engine_probe FILE... (REPEAT=n, ROUNDS=n)".into());
    }
    let contents = files
        .iter()
        .map(|f| std::fs::read(f).map_err(|e| format!("{f}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut lines: Vec<&[u8]> = Vec::new();
    for content in &contents {
        for _ in 0..repeat {
            lines.extend(stencil_bench::split_lines(content));
        }
    }
    let mut seconds = 0.0;
    for _ in 0..rounds {
        let mut engine = Engine::new(EngineConfig::default());
        seconds += stencil_bench::engine_pass(&mut engine, &lines);
    }
    println!("{} lines x {rounds} rounds in {seconds:.3} s", lines.len());
    if number("CHECKSUM", 0)? != 0 {
        println!("output checksum {:016x}", checksum(&lines)?);
    }
    Ok(())
}

/// A hash of the serialized v3 batches a fresh engine makes of `lines` (batches of 1000, as timed).
fn checksum(lines: &[&[u8]]) -> Result<u64, String> {
    let encoder = BatchEncoder::new(Generation::V3, Compression::Identity);
    let mut engine = Engine::new(EngineConfig::default());
    let mut hash = DefaultHasher::new();
    let mut datums = Vec::new();
    for chunk in lines.chunks(1000) {
        datums.clear();
        for l in chunk {
            engine.encode(l, &Meta::default(), &mut datums);
        }
        let bytes = encoder.serialize(&datums).map_err(|e| e.to_string())?;
        hash.write(&bytes);
    }
    Ok(hash.finish())
}
