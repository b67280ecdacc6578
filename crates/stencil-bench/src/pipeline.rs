//! `stencil bench pipeline`: the real agent (`stencil ship --once`) and a real intake (`stencil intake
//! --out`) as two processes over loopback gRPC, acks on, on the same input. It reports end-to-end lines/s
//! and MiB/s, the CPU seconds of each process per GiB of input, each process's peak RSS (from `wait4`), and
//! checks that the intake's files equal the input byte for byte. In the same run it measures, on one
//! thread, tokenize + mine + encode throughput and, as the baseline, per-batch zstd-1 of the same lines.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use stencil_patterns::{Engine, EngineConfig};

/// The agent's wire in the real pair (`stencil ship --wire`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Wire {
    /// Negotiate the Stencil extensions.
    Auto,
    /// Plain v3.
    V3,
}

/// Flags of `stencil bench pipeline`.
#[derive(clap::Args, Debug)]
pub struct PipelineArgs {
    /// Input files (each line is one log). Each is repeated until the inputs reach --min-mib together.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Repeat the inputs until they hold at least this many MiB (small files measure process start-up).
    #[arg(long, default_value_t = 128)]
    min_mib: u64,
    /// Logs per batch, passed to the agent.
    #[arg(long, default_value_t = 1000)]
    batch_lines: usize,
    /// Agent pipelines (`ship --streams`); default: the agent's own default.
    #[arg(long)]
    streams: Option<usize>,
    /// Alternated rounds of the one-thread engine and zstd-1 measurement (the median is reported).
    #[arg(long, default_value_t = 5, value_name = "N")]
    engine_rounds: usize,
    /// zstd level of the default wire's stream contexts (`ship --stream-level`); default: the agent's.
    #[arg(long, value_name = "LEVEL")]
    stream_level: Option<i32>,
    /// The agent's wire (`ship --wire`): `auto` negotiates the extensions with the intake, `v3` is the
    /// compatible wire. Run both to compare their CPU and bytes in the same session.
    #[arg(long, value_enum, default_value_t = crate::pipeline::Wire::Auto)]
    wire: crate::pipeline::Wire,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Keep the working folder (inputs, rebuilt files, logs of both processes) at this path.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
}

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// Resource use of one finished child process, from `wait4`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Usage {
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    pub success: bool,
}

/// Waits for `child` and returns its CPU time and peak RSS (Linux `wait4`; `ru_maxrss` is in KiB).
fn wait_with_usage(child: &mut Child) -> Result<Usage, String> {
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain old data, so all-zero is a valid value; `wait4` writes into the two
    // pointers, which are valid for the duration of the call, and `pid` is our own unreaped child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc != pid {
        return Err(format!("wait4({pid}): {}", std::io::Error::last_os_error()));
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Usage {
        cpu_seconds: secs(usage.ru_utime) + secs(usage.ru_stime),
        peak_rss_bytes: usage.ru_maxrss as u64 * 1024,
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    })
}

/// Writes each input, repeated, under `dir/in`, until the copies hold at least `min_bytes` together.
/// Returns the paths written and their total size.
fn prepare_inputs(
    files: &[PathBuf],
    dir: &Path,
    min_bytes: u64,
) -> Result<(Vec<PathBuf>, u64), String> {
    // Streamed, never held whole: this process's peak RSS would show up in the agent's (see `same_bytes`).
    let fail = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let mut sizes = Vec::with_capacity(files.len());
    for p in files {
        let len = std::fs::metadata(p).map_err(|e| fail(p, e))?.len();
        // Does the file end with a newline? (A copy without one gets it, so that copies do not merge.)
        let ends_with_newline = len > 0 && {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(p).map_err(|e| fail(p, e))?;
            let mut last = [0u8];
            f.seek(SeekFrom::End(-1))
                .and_then(|_| f.read_exact(&mut last))
                .map_err(|e| fail(p, e))?;
            last[0] == b'\n'
        };
        sizes.push((len, ends_with_newline));
    }
    let once: u64 = sizes.iter().map(|(len, _)| len + 1).sum();
    if once <= files.len() as u64 {
        return Err("the input files are empty".into());
    }
    let copies = min_bytes.div_ceil(once).max(1);
    let folder = dir.join("in");
    std::fs::create_dir_all(&folder).map_err(|e| fail(&folder, e))?;
    let mut paths = Vec::new();
    let mut total = 0u64;
    for (i, (&(_, ends_with_newline), path)) in sizes.iter().zip(files).enumerate() {
        let name = path.file_name().map_or_else(
            || format!("input-{i}"),
            |n| n.to_string_lossy().into_owned(),
        );
        let target = folder.join(format!("{i:02}-{name}"));
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(&target).map_err(|e| fail(&target, e))?);
        for _ in 0..copies {
            let mut src = std::fs::File::open(path).map_err(|e| fail(path, e))?;
            std::io::copy(&mut src, &mut out).map_err(|e| fail(&target, e))?;
            if !ends_with_newline {
                out.write_all(b"\n").map_err(|e| fail(&target, e))?;
            }
        }
        out.flush().map_err(|e| fail(&target, e))?;
        total += std::fs::metadata(&target)
            .map_err(|e| fail(&target, e))?
            .len();
        paths.push(target);
    }
    Ok((paths, total))
}

/// Starts `stencil intake` on an ephemeral loopback port and returns it with the address it reports.
fn start_intake(exe: &Path, out: &Path, log: &Path) -> Result<(Child, String), String> {
    let mut child = Command::new(exe)
        .args([
            "intake",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
            "--out",
        ])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the intake ({}): {e}", exe.display()))?;
    let stderr = child.stderr.take().ok_or("intake stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let log = log.to_path_buf();
    std::thread::spawn(move || {
        let mut file = std::fs::File::create(&log).ok();
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(f) = file.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            if !sent {
                if let Some(addr) = line.strip_prefix("stencil intake: listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                    sent = true;
                }
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(addr) => Ok((child, addr)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err("the intake did not report its address within 30 s".into())
        }
    }
}

/// Where the intake's file sink puts the rebuilt copy of `source` under `out`.
fn rebuilt_path(out: &Path, source: &Path) -> Result<PathBuf, String> {
    let abs = std::fs::canonicalize(source).map_err(|e| format!("{}: {e}", source.display()))?;
    Ok(out.join(abs.strip_prefix("/").unwrap_or(&abs)))
}

/// Whether two files hold the same bytes (a missing `rebuilt` differs). Compared in small chunks, never
/// whole: a child started later reports the larger of its own peak RSS and this process's (Linux carries
/// the spawning process's high-water mark into the child at `exec`), so this process must stay small.
fn same_bytes(rebuilt: &Path, original: &Path) -> Result<bool, String> {
    use std::io::BufRead;
    let Ok(a) = std::fs::File::open(rebuilt) else {
        return Ok(false);
    };
    let b = std::fs::File::open(original).map_err(|e| format!("{}: {e}", original.display()))?;
    let (mut a, mut b) = (
        std::io::BufReader::with_capacity(1 << 20, a),
        std::io::BufReader::with_capacity(1 << 20, b),
    );
    let fail = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    loop {
        let x = a.fill_buf().map_err(|e| fail(rebuilt, e))?;
        let y = b.fill_buf().map_err(|e| fail(original, e))?;
        if x.is_empty() || y.is_empty() {
            return Ok(x.is_empty() && y.is_empty());
        }
        let n = x.len().min(y.len());
        if x[..n] != y[..n] {
            return Ok(false);
        }
        a.consume(n);
        b.consume(n);
    }
}

/// The working folder of a process benchmark: `keep` if given (created), else a temporary folder that
/// lives as long as the returned guard.
pub(super) fn work_dir(
    prefix: &str,
    keep: Option<&Path>,
) -> Result<(tempfile::TempDir, PathBuf), String> {
    let scratch = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("temporary folder: {e}"))?;
    let dir = keep.map_or_else(|| scratch.path().to_path_buf(), Path::to_path_buf);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok((scratch, dir))
}

/// One `stencil ship --once` run against a fresh `stencil intake`, both as child processes.
pub(super) struct AgentRun {
    pub agent: Usage,
    pub intake: Usage,
    /// From the agent's start to its exit.
    pub wall_seconds: f64,
    /// The agent's `--summary-json`.
    pub summary: serde_json::Value,
    /// Every rebuilt file equals its input, byte for byte.
    pub rebuilt_identical: bool,
}

/// Starts an intake writing under `dir/out`, ships `inputs` with `stencil ship --once --endpoint …` plus
/// `ship_args` (both processes log under `dir`), stops the intake with SIGTERM, and compares every rebuilt
/// file with its input.
pub(super) fn run_agent(
    exe: &Path,
    dir: &Path,
    ship_args: &[String],
    inputs: &[PathBuf],
) -> Result<AgentRun, String> {
    let out = dir.join("out");
    let (mut intake, addr) = start_intake(exe, &out, &dir.join("intake.log"))?;
    let summary_path = dir.join("summary.json");
    let ship_log = dir.join("ship.log");
    let started = Instant::now();
    let mut agent = Command::new(exe)
        .args([
            "ship",
            "--once",
            "--log-level",
            "warn",
            "--api-key",
            "bench",
        ])
        .arg("--endpoint")
        .arg(format!("http://{addr}"))
        .arg("--summary-json")
        .arg(&summary_path)
        .args(ship_args)
        .args(inputs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(&ship_log)
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn()
        .map_err(|e| format!("starting the agent: {e}"))?;
    let agent_usage = wait_with_usage(&mut agent)?;
    let wall_seconds = started.elapsed().as_secs_f64();
    // SAFETY: plain syscall on our own child's pid.
    unsafe {
        libc::kill(intake.id() as libc::pid_t, libc::SIGTERM);
    }
    let intake_usage = wait_with_usage(&mut intake)?;
    if !agent_usage.success {
        return Err(format!("the agent failed; see {}", ship_log.display()));
    }
    let summary: serde_json::Value = std::fs::read(&summary_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("the agent wrote no summary")?;
    let mut rebuilt_identical = true;
    for input in inputs {
        rebuilt_identical &= same_bytes(&rebuilt_path(&out, input)?, input)?;
    }
    Ok(AgentRun {
        agent: agent_usage,
        intake: intake_usage,
        wall_seconds,
        summary,
        rebuilt_identical,
    })
}

/// Runs the pipeline benchmark.
pub fn run(args: &PipelineArgs) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating the stencil binary: {e}"))?;
    let (_scratch, dir) = work_dir("stencil-bench-pipeline", args.keep.as_deref())?;
    let (inputs, input_bytes) =
        prepare_inputs(&args.files, &dir, args.min_mib.saturating_mul(1 << 20))?;
    // --no-compare: the agent's own zstd-1 comparison would add CPU that a production agent does not spend.
    let mut ship_args = vec![
        "--wire".to_string(),
        match args.wire {
            crate::pipeline::Wire::Auto => "auto",
            crate::pipeline::Wire::V3 => "v3",
        }
        .to_string(),
        "--no-compare".to_string(),
        "--batch-lines".to_string(),
        args.batch_lines.to_string(),
    ];
    if let Some(n) = args.streams {
        ship_args.extend(["--streams".to_string(), n.to_string()]);
    }
    if let Some(level) = args.stream_level {
        ship_args.extend(["--stream-level".to_string(), level.to_string()]);
    }
    let AgentRun {
        agent: agent_usage,
        intake: intake_usage,
        wall_seconds: wall,
        summary,
        rebuilt_identical: verified,
    } = run_agent(&exe, &dir, &ship_args, &inputs)?;

    // Same run, one thread: the engine (a fresh one each round) and, as the baseline, per-batch zstd-1
    // of the same lines, alternated `--engine-rounds` times and timed in thread CPU. One pass of either
    // is at the mercy of the machine's neighbours (single passes ranged 7.1x to 10.5x on one build), so
    // the median round is reported, with the range.
    let contents: Vec<Vec<u8>> = inputs
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())))
        .collect::<Result<_, _>>()?;
    let mut lines: Vec<&[u8]> = Vec::new();
    for c in &contents {
        lines.extend(super::split_lines(c));
    }
    let rounds = args.engine_rounds.max(1);
    let (mut engine_times, mut zstd_times, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut packed = 0usize;
    for _ in 0..rounds {
        let mut engine = Engine::new(EngineConfig::default());
        let started = super::thread_cpu();
        super::engine_pass(&mut engine, &lines);
        let engine_secs = (super::thread_cpu() - started).max(1e-9);
        let started = super::thread_cpu();
        packed = std::hint::black_box(super::zstd1_per_batch(&lines, args.batch_lines));
        let zstd_secs = (super::thread_cpu() - started).max(1e-9);
        engine_times.push(engine_secs);
        zstd_times.push(zstd_secs);
        ratios.push(engine_secs / zstd_secs);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (engine_secs, zstd_secs) = (median(&mut engine_times), median(&mut zstd_times));
    let ratio = median(&mut ratios);
    let (ratio_min, ratio_max) = (ratios[0], ratios[ratios.len() - 1]);

    let n_lines = summary["lines"].as_u64().unwrap_or(0);
    let mib = input_bytes as f64 / MIB;
    let gib = input_bytes as f64 / GIB;
    let report = json!({
        "inputs": args.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "input_bytes": input_bytes,
        "lines": n_lines,
        "batch_lines": args.batch_lines,
        "wall_seconds": wall,
        "lines_per_sec": n_lines as f64 / wall,
        "mib_per_sec": mib / wall,
        "agent_cpu_seconds": agent_usage.cpu_seconds,
        "intake_cpu_seconds": intake_usage.cpu_seconds,
        "agent_cpu_seconds_per_gib": agent_usage.cpu_seconds / gib,
        "intake_cpu_seconds_per_gib": intake_usage.cpu_seconds / gib,
        "agent_mib_per_cpu_second": mib / agent_usage.cpu_seconds.max(1e-9),
        "agent_peak_rss_bytes": agent_usage.peak_rss_bytes,
        "intake_peak_rss_bytes": intake_usage.peak_rss_bytes,
        "wire_bytes": summary["wire_bytes"],
        "wire_ratio_to_zstd1": packed as f64 / summary["wire_bytes"].as_f64().unwrap_or(0.0).max(1.0),
        "rebuilt_identical": verified,
        "engine_lines_per_sec": lines.len() as f64 / engine_secs,
        "engine_mib_per_sec": mib / engine_secs,
        "zstd1_mib_per_sec": mib / zstd_secs,
        "engine_rounds": rounds,
        "engine_to_zstd1_cpu": ratio,
        "engine_to_zstd1_cpu_range": [ratio_min, ratio_max],
    });
    if args.json {
        println!("{report}");
    } else {
        print_report(&report);
    }
    if !verified {
        return Err("the rebuilt files differ from the input".into());
    }
    Ok(())
}

fn print_report(r: &serde_json::Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    let mb = |k: &str| f(k) / MIB;
    println!(
        "input: {:.1} MiB, {} lines, {} lines per batch (agent and intake as two processes, loopback gRPC, acks on)",
        mb("input_bytes"),
        r["lines"],
        r["batch_lines"]
    );
    println!(
        "end to end: {:.2} s, {:.0} lines/s, {:.1} MiB/s",
        f("wall_seconds"),
        f("lines_per_sec"),
        f("mib_per_sec")
    );
    println!(
        "agent:  {:.2} CPU s ({:.2} CPU s/GiB, {:.1} MiB per CPU second), peak RSS {:.1} MiB",
        f("agent_cpu_seconds"),
        f("agent_cpu_seconds_per_gib"),
        f("agent_mib_per_cpu_second"),
        mb("agent_peak_rss_bytes")
    );
    println!(
        "intake: {:.2} CPU s ({:.2} CPU s/GiB), peak RSS {:.1} MiB",
        f("intake_cpu_seconds"),
        f("intake_cpu_seconds_per_gib"),
        mb("intake_peak_rss_bytes")
    );
    println!(
        "wire: {} bytes ({:.2}x fewer than per-batch zstd-1 of the same batches); rebuilt files identical: {}",
        r["wire_bytes"],
        f("wire_ratio_to_zstd1"),
        r["rebuilt_identical"]
    );
    println!(
        "one thread: tokenize+mine+encode {:.0} lines/s ({:.1} MiB/s); per-batch zstd-1 {:.1} MiB/s (engine = {:.2}x zstd-1's CPU, median of {} alternated rounds; {:.2}-{:.2}x)",
        f("engine_lines_per_sec"),
        f("engine_mib_per_sec"),
        f("zstd1_mib_per_sec"),
        f("engine_to_zstd1_cpu"),
        r["engine_rounds"],
        r["engine_to_zstd1_cpu_range"][0].as_f64().unwrap_or(0.0),
        r["engine_to_zstd1_cpu_range"][1].as_f64().unwrap_or(0.0)
    );
}
