//! What variable-length merging (span slots) costs the engine on a given input: the same lines through
//! a fresh engine with the feature off and on, alternately, twice each, in one process (so the ratio
//! survives a noisy machine). One thread, 1000-line batches, no I/O in the timed part.
//!
//! `cargo run --release -p stencil-patterns --example variable_length_cost -- FILE`; the generated
//! unique-heavy inputs come from `stencil bench cardinality --keep DIR` (`DIR/high.log`, `DIR/extreme.log`).

use std::time::Instant;

use stencil_patterns::{Engine, EngineConfig, Meta};

fn main() -> Result<(), String> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: variable_length_cost FILE")?;
    let text = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let mut speed = [Vec::new(), Vec::new()];
    for variable_length in [false, true, false, true] {
        let mut engine = Engine::new(EngineConfig {
            variable_length,
            ..EngineConfig::default()
        });
        let mut out = Vec::new();
        let started = Instant::now();
        for batch in lines.chunks(1000) {
            out.clear();
            for line in batch {
                engine.encode(line, &Meta::default(), &mut out);
            }
        }
        let per_sec = lines.len() as f64 / started.elapsed().as_secs_f64();
        let stats = engine.stats();
        println!(
            "variable_length={variable_length:<5} {per_sec:>10.0} lines/s  structured {}  pattern defines {}",
            stats.structured, stats.pattern_defines
        );
        speed[usize::from(variable_length)].push(per_sec);
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!(
        "on / off (best of 2 each): {:.3}",
        best(&speed[1]) / best(&speed[0])
    );
    Ok(())
}
