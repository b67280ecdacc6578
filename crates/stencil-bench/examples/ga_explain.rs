//! Development aid: shows where the pattern engine's grouping disagrees with a Loghub ground truth.
//! `cargo run --release -p stencil-bench --example ga_explain -- ../shared/corpus/loghub-2k/Linux`

use std::collections::{BTreeMap, BTreeSet};

use stencil_patterns::EngineConfig;

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("a system folder"));
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_owned();
    let mut reader =
        csv::Reader::from_path(dir.join(format!("{name}_2k.log_structured.csv"))).expect("csv");
    let headers = reader.headers().expect("headers").clone();
    let c = headers
        .iter()
        .position(|h| h == "Content")
        .expect("Content");
    let e = headers
        .iter()
        .position(|h| h == "EventId")
        .expect("EventId");
    let rows: Vec<(String, String)> = reader
        .records()
        .map(|r| r.expect("row"))
        .map(|r| (r[c].to_owned(), r[e].to_owned()))
        .collect();
    // `SIMILARITY=0.8` tries another threshold.
    let mut config = EngineConfig::default();
    if let Some(s) = std::env::var("SIMILARITY")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        config.similarity = s;
    }
    let contents: Vec<&[u8]> = rows.iter().map(|(c, _)| c.as_bytes()).collect();
    // Lines of merged patterns count with the survivor, as in `stencil bench patterns`.
    let (patterns, _) = stencil_bench::mine_groups(&contents, &config);
    let mut by_truth: BTreeMap<&str, BTreeMap<Option<u64>, Vec<&str>>> = BTreeMap::new();
    let mut by_pred: BTreeMap<Option<u64>, BTreeSet<&str>> = BTreeMap::new();
    for ((content, event), p) in rows.iter().zip(patterns) {
        by_truth
            .entry(event)
            .or_default()
            .entry(p)
            .or_default()
            .push(content);
        by_pred.entry(p).or_default().insert(event);
    }
    for (event, preds) in &by_truth {
        let merged: Vec<_> = preds.keys().filter(|p| by_pred[p].len() > 1).collect();
        if preds.len() > 1 || !merged.is_empty() {
            let n: usize = preds.values().map(Vec::len).sum();
            println!(
                "== {event} ({n} lines) split into {} clusters, merged: {merged:?}",
                preds.len()
            );
            for (p, lines) in preds.iter().take(6) {
                println!(
                    "   {p:?} x{} (events {:?}): {}",
                    lines.len(),
                    by_pred[p],
                    lines[0]
                );
            }
        }
    }
}
