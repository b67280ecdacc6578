//! The chaos test (#16, "Proof"): real processes, a real network in between, and everything that can go
//! wrong, at once, for a bounded time.
//!
//! A writer appends numbered lines to a file. `stencil ship` follows it with a `--data-dir` and sends
//! through a TCP proxy to `stencil intake`, which writes the rebuilt file. While it runs, a schedule
//! (deterministic, seeded) makes the proxy reset every connection, stall, or cut a frame in the middle,
//! and kills the agent or the intake with SIGKILL and restarts it. Then the faults stop, the writer
//! stops, and the test waits for the last line.
//!
//! What must hold: every line arrives, whole (no torn or glued lines), and in order except for replays;
//! duplicates are counted and stay within what could have been unacked at each fault.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NORMAL: u8 = 0;
const STALL: u8 = 1;
const CUT: u8 = 2;

/// A TCP proxy whose behaviour the test switches: forward, stall (hold every byte), or cut (forward
/// half of the next chunk, then close). `reset` closes every open connection.
struct Proxy {
    mode: Arc<AtomicU8>,
    generation: Arc<AtomicU64>,
    port: u16,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        let port = listener.local_addr().expect("addr").port();
        let mode = Arc::new(AtomicU8::new(NORMAL));
        let generation = Arc::new(AtomicU64::new(0));
        let (m, g) = (mode.clone(), generation.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let born = g.load(Ordering::SeqCst);
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let (m, g) = (m.clone(), g.clone());
                    std::thread::spawn(move || pipe(from, to, &m, &g, born));
                }
            }
        });
        Proxy {
            mode,
            generation,
            port,
        }
    }

    fn reset(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    mode: &AtomicU8,
    generation: &AtomicU64,
    born: u64,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if generation.load(Ordering::SeqCst) != born {
            break;
        }
        match mode.load(Ordering::SeqCst) {
            STALL => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            CUT => {
                if let Ok(n @ 1..) = from.read(&mut buf) {
                    let _ = to.write_all(&buf[..n.div_ceil(2)]);
                    break;
                }
                continue;
            }
            _ => {}
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

fn intake(port: u16, out: &std::path::Path) -> common::Reaped {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stencil"));
    command
        .args(["intake", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--api-key", "k1", "--grace-secs", "2", "--out"])
        .arg(out);
    let (child, _) = common::spawn_intake(command);
    child
}

fn agent(proxy: u16, dir: &std::path::Path, input: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_stencil"))
        .args(["ship", "--endpoint", &format!("http://127.0.0.1:{proxy}")])
        .args([
            "--api-key",
            "k1",
            "--batch-wait-ms",
            "50",
            "--batch-lines",
            "200",
        ])
        .args(["--checkpoint-interval-ms", "50", "--streams", "1"])
        .args(["--shutdown-timeout-secs", "10", "--data-dir"])
        .arg(dir.join("data"))
        .arg(input)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent starts")
}

fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// xorshift: the schedule is the same on every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn line(n: u64) -> String {
    format!(
        "{n:08} chaos request id={} took {} ms",
        n * 7919 % 10_007,
        n % 503
    )
}

#[test]
fn nothing_is_lost_under_resets_stalls_cuts_and_kills_of_both_sides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("abs");
    let input = root.join("app.log");
    let out = root.join("out");
    std::fs::File::create(&input).expect("input");
    let intake_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let intake_proc = Arc::new(Mutex::new(intake(intake_port, &out)));
    let proxy = Proxy::start(intake_port);
    let mut agent_proc = agent(proxy.port, &root, &input);

    let written = Arc::new(AtomicU64::new(0));
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writer = {
        let (input, written, stop) = (input.clone(), written.clone(), stop_writing.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&input)
                .expect("append");
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let mut chunk = String::new();
                for _ in 0..200 {
                    chunk.push_str(&line(n));
                    chunk.push('\n');
                    n += 1;
                }
                f.write_all(chunk.as_bytes()).expect("write");
                written.store(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let (mut agent_kills, mut intake_kills, mut proxy_faults) = (0u32, 0u32, 0u32);
    let mut rng = 0x0005_eedc_4a05_u64;
    let chaos_for = Duration::from_secs(30);
    let started = Instant::now();
    while started.elapsed() < chaos_for {
        std::thread::sleep(Duration::from_millis(700 + next(&mut rng) % 1300));
        match next(&mut rng) % 5 {
            0 => {
                kill9(&mut agent_proc);
                agent_kills += 1;
                agent_proc = agent(proxy.port, &root, &input);
            }
            1 => {
                let mut guard = intake_proc.lock().expect("lock");
                kill9(&mut guard);
                intake_kills += 1;
                *guard = intake(intake_port, &out);
            }
            2 => {
                proxy.reset();
                proxy_faults += 1;
            }
            3 => {
                proxy.mode.store(STALL, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1000 + next(&mut rng) % 3000));
                proxy.mode.store(NORMAL, Ordering::SeqCst);
                proxy_faults += 1;
            }
            _ => {
                proxy.mode.store(CUT, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(200));
                proxy.mode.store(NORMAL, Ordering::SeqCst);
                proxy_faults += 1;
            }
        }
    }
    stop_writing.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    let total = written.load(Ordering::SeqCst);
    let last = line(total - 1);
    let rebuilt = common::rebuilt_path(&out, &input);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !std::fs::read_to_string(&rebuilt).is_ok_and(|s| s.lines().any(|l| l == last)) {
        assert!(
            Instant::now() < deadline,
            "the last line never arrived (after {agent_kills} agent kills, {intake_kills} intake kills, {proxy_faults} proxy faults)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    common::sigterm_and_wait(&mut agent_proc);
    common::sigterm_and_wait(&mut intake_proc.lock().expect("lock"));

    let text = std::fs::read_to_string(&rebuilt).expect("rebuilt");
    let mut seen = vec![0u32; total as usize];
    let mut expected = 0u64;
    let mut duplicates = 0u64;
    for l in text.lines() {
        let n: u64 = l
            .get(..8)
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("a torn or glued line: {l:?}"));
        assert_eq!(l, line(n), "a whole line, byte for byte");
        assert!(n < total, "a line that was never written: {l:?}");
        seen[n as usize] += 1;
        if n == expected {
            expected += 1;
        } else {
            assert!(n < expected, "line {n} arrived before line {expected}");
            duplicates += 1;
        }
    }
    let missing = seen.iter().filter(|&&c| c == 0).count();
    assert_eq!(missing, 0, "every line arrived");
    assert_eq!(expected, total);
    // Each fault can replay at most what was in flight or read past the last saved checkpoint: 50
    // payloads of at most 200 lines, plus the lines written since the last checkpoint (a few thousand).
    let faults = u64::from(agent_kills + intake_kills + proxy_faults);
    assert!(
        duplicates <= faults * 15_000,
        "{duplicates} duplicates for {faults} faults"
    );
    eprintln!(
        "chaos: {total} lines, {agent_kills} agent kills, {intake_kills} intake kills, {proxy_faults} proxy faults, {duplicates} duplicates, 0 lost"
    );
    assert!(
        agent_kills + intake_kills > 0 && proxy_faults > 0,
        "the schedule exercised both kinds of fault"
    );
}
