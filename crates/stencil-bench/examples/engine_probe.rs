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

use stencil_patterns::{Engine, EngineConfig};

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
    Ok(())
}
