//! `stencil bench cardinality`: memory and compression under unique-heavy input. A deterministic generator
//! writes logs with random ids and, at each level, a growing share of never-seen templates; the real agent
//! ships each file to a real intake (two processes, loopback) under several `--state-budget-mib` values.
//! It reports the agent's peak RSS against its configured budget, and the wire ratio against a zstd-1
//! stream of the same lines (a flushed block per 1,000-line batch), so one can see memory stay bounded
//! and compression degrade gracefully. Each run also checks that the intake rebuilt the file byte for
//! byte.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::pipeline::{run_agent, work_dir};

/// Flags of `stencil bench cardinality`.
#[derive(clap::Args, Debug)]
pub struct CardinalityArgs {
    /// Lines generated per level.
    #[arg(long, default_value_t = 400_000)]
    lines: usize,
    /// State budgets to run the agent with, in MiB (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [2usize, 8, 32])]
    budgets_mib: Vec<usize>,
    /// Cardinality levels (comma-separated): low, high, extreme, structure.
    #[arg(long, value_delimiter = ',', default_values_t = [Level::Low, Level::High, Level::Extreme, Level::Structure])]
    levels: Vec<Level>,
    /// The wire the agent uses (`auto`, the default of `ship`, or `v3`).
    #[arg(long, default_value = "auto", value_parser = ["auto", "v3"])]
    wire: String,
    /// Seed of the generator (same seed, same files).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// One JSON object per run instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write an SVG chart (agent peak RSS against the state budget, per level) into this folder.
    #[arg(long, value_name = "DIR")]
    charts: Option<PathBuf>,
    /// Keep the generated files and the processes' logs under this folder.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
}

/// How unique the generated logs are.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// 1 line in 2,000 uses a new template; ids repeat from small sets.
    Low,
    /// 1 line in 20 uses a new template; every id is unique.
    High,
    /// Every line is a new template full of unique ids.
    Extreme,
    /// Every line also has a structure never seen before: its punctuation differs, so no two lines
    /// share a skeleton (what grows the pattern engine's indexes, not only its patterns).
    Structure,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Low => "low",
            Level::High => "high",
            Level::Extreme => "extreme",
            Level::Structure => "structure",
        })
    }
}

/// SplitMix64: a small, fast, seedable generator; the files only need to be reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn word(&mut self) -> String {
        let len = 3 + self.below(8) as usize;
        (0..len)
            .map(|_| (b'a' + self.below(26) as u8) as char)
            .collect()
    }
}

#[derive(Clone, Copy)]
enum Slot {
    Uuid,
    Hex,
    Int,
    Ip,
    Millis,
    Path,
}

#[derive(Clone)]
enum Part {
    Word(String),
    Slot(Slot),
}

/// The generator: a pool of recent templates, new ones at the level's rate, values unique or not.
struct Generator {
    rng: Rng,
    level: Level,
    templates: Vec<Vec<Part>>,
    clock_ms: u64,
}

const LEVELS: [&str; 4] = ["INFO", "WARN", "ERROR", "DEBUG"];
const COMPONENTS: [&str; 8] = [
    "api",
    "db",
    "auth",
    "cache",
    "queue",
    "worker",
    "scheduler",
    "gateway",
];
const TEMPLATE_POOL: usize = 4096;

impl Generator {
    fn new(level: Level, seed: u64) -> Self {
        let mut g = Generator {
            rng: Rng(seed),
            level,
            templates: Vec::new(),
            clock_ms: 1_798_000_000_000,
        };
        for _ in 0..64 {
            let t = g.template();
            g.templates.push(t);
        }
        g
    }

    fn template(&mut self) -> Vec<Part> {
        let n = 4 + self.rng.below(9);
        (0..n)
            .map(|_| {
                if self.rng.below(10) < 6 {
                    Part::Word(self.rng.word())
                } else {
                    Part::Slot(match self.rng.below(6) {
                        0 => Slot::Uuid,
                        1 => Slot::Hex,
                        2 => Slot::Int,
                        3 => Slot::Ip,
                        4 => Slot::Millis,
                        _ => Slot::Path,
                    })
                }
            })
            .collect()
    }

    fn value(&mut self, slot: Slot, out: &mut String) {
        use std::fmt::Write as _;
        // Low cardinality draws ids from small sets; the other levels make each one unique.
        let unique = self.level != Level::Low;
        let id = if unique {
            self.rng.next()
        } else {
            self.rng.below(50)
        };
        let _ = match slot {
            Slot::Uuid => {
                let (x, y) = if unique {
                    (id, self.rng.next())
                } else {
                    (
                        id.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                        id.wrapping_mul(0xC2B2_AE3D_27D4_EB4F),
                    )
                };
                write!(
                    out,
                    "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                    x >> 32,
                    (x >> 16) & 0xffff,
                    x & 0xfff,
                    y >> 52,
                    y & 0xffff_ffff_ffff
                )
            }
            Slot::Hex => write!(out, "0x{id:016x}"),
            Slot::Int => write!(out, "{}", self.rng.below(100_000)),
            Slot::Ip => write!(
                out,
                "10.{}.{}.{}",
                (id >> 16) & 255,
                (id >> 8) & 255,
                id & 255
            ),
            Slot::Millis => write!(out, "{}ms", self.rng.below(5000)),
            Slot::Path => write!(out, "/srv/data/{:x}/part-{}.bin", id & 0xffff_ffff, id % 97),
        };
    }

    fn line(&mut self, out: &mut String) {
        use std::fmt::Write as _;
        out.clear();
        self.clock_ms += self.rng.below(20);
        let (secs, ms) = (self.clock_ms / 1000, self.clock_ms % 1000);
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let level = LEVELS[self.rng.below(4) as usize];
        let component = COMPONENTS[self.rng.below(8) as usize];
        let _ = write!(
            out,
            "2026-11-27T{h:02}:{m:02}:{s:02}.{ms:03}Z {level} [{component}]"
        );
        let rate = match self.level {
            Level::Low => 2000,
            Level::High => 20,
            Level::Extreme | Level::Structure => 1,
        };
        let template = if self.rng.below(rate) == 0 {
            let t = self.template();
            if self.templates.len() >= TEMPLATE_POOL {
                let k = self.rng.below(TEMPLATE_POOL as u64) as usize;
                self.templates[k] = t.clone();
            } else {
                self.templates.push(t.clone());
            }
            t
        } else {
            // Skewed reuse: recent-ish templates are more common.
            let n = self.templates.len() as u64;
            let a = self.rng.below(n);
            let b = self.rng.below(n);
            self.templates[a.min(b) as usize].clone()
        };
        const GLUE: [&str; 12] = [
            " ", ", ", "; ", ": ", " | ", " = ", " (", ") ", " [", "] ", " / ", " -> ",
        ];
        for part in template {
            if self.level == Level::Structure {
                out.push_str(GLUE[self.rng.below(GLUE.len() as u64) as usize]);
            } else {
                out.push(' ');
            }
            match part {
                Part::Word(w) => out.push_str(&w),
                Part::Slot(slot) => self.value(slot, out),
            }
        }
    }
}

fn generate(path: &Path, level: Level, lines: usize, seed: u64) -> Result<u64, String> {
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(fail)?);
    let mut g = Generator::new(level, seed);
    let mut line = String::new();
    let mut bytes = 0u64;
    for _ in 0..lines {
        g.line(&mut line);
        line.push('\n');
        out.write_all(line.as_bytes()).map_err(fail)?;
        bytes += line.len() as u64;
    }
    out.flush().map_err(fail)?;
    Ok(bytes)
}

/// A zstd-1 stream of the file's lines with a flushed block every 1,000 lines (the agent's batch): the
/// strongest simple alternative, measured on the same lines and batch boundaries.
fn stream_zstd1_bytes(path: &Path) -> Result<u64, String> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut ctx = super::wire::sc(1)?;
    let (mut batch, mut lines, mut total) = (Vec::new(), 0, 0u64);
    for line in std::io::BufReader::new(file).split(b'\n') {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        batch.extend_from_slice(&line);
        batch.push(b'\n');
        lines += 1;
        if lines == 1000 {
            total += ctx
                .compress_batch(&batch)
                .map_err(|e| format!("zstd: {e}"))?
                .len() as u64;
            batch.clear();
            lines = 0;
        }
    }
    if !batch.is_empty() {
        total += ctx
            .compress_batch(&batch)
            .map_err(|e| format!("zstd: {e}"))?
            .len() as u64;
    }
    Ok(total)
}

/// Runs the cardinality benchmark.
pub fn run(args: &CardinalityArgs) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating the stencil binary: {e}"))?;
    let (_scratch, dir) = work_dir("stencil-bench-cardinality", args.keep.as_deref())?;
    if !args.json {
        println!(
            "{:<8} {:>7} {:>9} {:>10} {:>14} {:>13} {:>11} {:>9} {:>10} {:>6}",
            "level",
            "budget",
            "lines",
            "input MiB",
            "agent RSS MiB",
            "RSS - budget",
            "wire bytes",
            "÷ zstd-1 s",
            "lines/s",
            "MiB/s"
        );
    }
    let mut worst_overhead = f64::MIN;
    let mut bars: Vec<(String, Vec<f64>)> = Vec::new();
    for &level in &args.levels {
        let input = dir.join(format!("{level}.log"));
        let input_bytes = generate(&input, level, args.lines, args.seed)?;
        let stream_zstd1 = stream_zstd1_bytes(&input)?;
        for &budget in &args.budgets_mib {
            let run_dir = dir.join(format!("{level}-{budget}"));
            std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
            // A repeated budget (or a --keep folder from an earlier run) must not append to old output.
            let _ = std::fs::remove_dir_all(run_dir.join("out"));
            // --no-compare: `ship --once` would keep a zstd-1 stream of the lines beside the wire for its
            // summary (about 1 MiB of RSS); a following agent does not, and this column has its own.
            let ship_args = [
                "--no-compare".to_string(),
                "--streams".to_string(),
                "1".to_string(),
                "--state-budget-mib".to_string(),
                budget.to_string(),
                "--wire".to_string(),
                args.wire.clone(),
            ];
            let run = run_agent(&exe, &run_dir, &ship_args, std::slice::from_ref(&input))?;
            if !run.rebuilt_identical {
                return Err(format!(
                    "{level}, {budget} MiB: the intake's copy differs from the input; rerun with --keep DIR \
                     to inspect {}",
                    run_dir.display()
                ));
            }
            let (usage, summary, wall) = (run.agent, run.summary, run.wall_seconds);
            let rss_mib = usage.peak_rss_bytes as f64 / (1024.0 * 1024.0);
            let overhead = rss_mib - budget as f64;
            worst_overhead = worst_overhead.max(overhead);
            bars.push((
                format!("{level}, {budget} MiB"),
                vec![rss_mib, budget as f64],
            ));
            let row = json!({
                "level": level.to_string(),
                "budget_mib": budget,
                "lines": summary["lines"],
                "input_bytes": input_bytes,
                "agent_peak_rss_bytes": usage.peak_rss_bytes,
                "rss_minus_budget_mib": overhead,
                "wire_bytes": summary["wire_bytes"],
                "wire": args.wire,
                "stream_zstd1_bytes": stream_zstd1,
                "ratio_to_stream_zstd1": stream_zstd1 as f64 / summary["wire_bytes"].as_f64().unwrap_or(f64::INFINITY),
                "patterns": summary["patterns"],
                "rebuilt_identical": true,
                "lines_per_sec": summary["lines"].as_f64().unwrap_or(0.0) / wall,
                "mib_per_sec": input_bytes as f64 / (1024.0 * 1024.0) / wall,
            });
            if args.json {
                println!("{row}");
            } else {
                println!(
                    "{:<8} {:>7} {:>9} {:>10.1} {:>14.1} {:>13.1} {:>11} {:>9.2} {:>10.0} {:>6.1}",
                    level.to_string(),
                    format!("{budget} MiB"),
                    row["lines"],
                    input_bytes as f64 / (1024.0 * 1024.0),
                    rss_mib,
                    overhead,
                    row["wire_bytes"],
                    row["ratio_to_stream_zstd1"].as_f64().unwrap_or(0.0),
                    row["lines_per_sec"].as_f64().unwrap_or(0.0),
                    row["mib_per_sec"].as_f64().unwrap_or(0.0),
                );
            }
        }
    }
    if !args.json {
        println!("largest agent RSS above its state budget: {worst_overhead:.1} MiB");
    }
    if let Some(dir) = &args.charts {
        std::fs::create_dir_all(dir).map_err(|e| format!("--charts {}: {e}", dir.display()))?;
        super::chart::grouped_bars(
            &dir.join("cardinality-rss.svg"),
            "Agent peak RSS against its state budget, by cardinality level",
            "MiB",
            &["agent peak RSS", "configured state budget"],
            &bars,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_levels_differ() {
        let lines = |level, seed| {
            let mut g = Generator::new(level, seed);
            let mut out = Vec::new();
            let mut line = String::new();
            for _ in 0..2000 {
                g.line(&mut line);
                out.push(line.clone());
            }
            out
        };
        assert_eq!(lines(Level::High, 7), lines(Level::High, 7));
        assert_ne!(lines(Level::High, 7), lines(Level::High, 8));
        let distinct = |v: &[String]| v.iter().collect::<std::collections::HashSet<_>>().len();
        // Low cardinality repeats whole lines' values often; extreme makes every line unique.
        assert_eq!(distinct(&lines(Level::Extreme, 1)), 2000);
        let words = |v: &[String]| {
            v.iter()
                .flat_map(|l| l.split(' ').skip(3))
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        assert!(words(&lines(Level::Low, 1)) * 5 < words(&lines(Level::Extreme, 1)));
        // The structure level's punctuation makes nearly every line's skeleton new.
        let skeletons = |v: &[String]| {
            v.iter()
                .map(|l| {
                    l.chars()
                        .filter(|c| c.is_ascii_punctuation())
                        .collect::<String>()
                })
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        assert!(skeletons(&lines(Level::Structure, 1)) > 1900);
        assert!(skeletons(&lines(Level::Extreme, 1)) < 1000);
    }
}
