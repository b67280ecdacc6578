//! The NATS JetStream sink through the real pair and a real `nats-server` (JetStream on, on loopback):
//! every log the agent ships ends up as one message whose body is the `--jsonl` object, on the subject
//! the template names; and a JetStream outage is never acked: the batches fail, the agent replays them,
//! and once the server is back every line is in the stream (duplicates allowed, counted).
//!
//! `.ci/run` installs `nats-server` from the distribution's packages; without it these tests fail.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts `nats-server -js` on `port` with its store in `store`, and waits until it takes connections.
fn start_nats(port: u16, store: &Path) -> Child {
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server runs (`apt-get install -y nats-server`; .ci/run installs it)");
    common::wait_for(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    child
}

/// Messages stored in stream `STENCIL` so far (0 while it cannot be read).
fn stored(port: u16) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let Ok(client) = async_nats::connect(format!("127.0.0.1:{port}")).await else {
            return 0;
        };
        let js = async_nats::jetstream::new(client);
        match js.get_stream("STENCIL").await {
            Ok(mut s) => s.info().await.map_or(0, |i| i.state.messages),
            Err(_) => 0,
        }
    })
}

/// The client and route ports of a 3-node cluster on loopback.
struct Cluster {
    ports: Vec<u16>,
    routes: Vec<u16>,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            ports: (0..3).map(|_| common::free_port()).collect(),
            routes: (0..3).map(|_| common::free_port()).collect(),
        }
    }

    /// Starts node `i` (its store under `dir`), and waits until it takes clients.
    fn node(&self, i: usize, dir: &Path) -> Child {
        let route_list = self
            .routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.ports[i].to_string()])
            .args([
                "--server_name",
                &format!("n{i}"),
                "--cluster_name",
                "stencil-test",
            ])
            .args(["--cluster", &format!("nats://127.0.0.1:{}", self.routes[i])])
            .args(["--routes", &route_list, "-sd"])
            .arg(dir.join(format!("node{i}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs");
        let port = self.ports[i];
        common::wait_for(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        child
    }
}

/// Waits until JetStream answers on `port` (a cluster answers once it has elected its meta leader).
fn wait_for_jetstream(port: u16) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = std::time::Instant::now();
    rt.block_on(async {
        let client = async_nats::connect(format!("127.0.0.1:{port}"))
            .await
            .expect("connects to NATS");
        let js = async_nats::jetstream::new(client);
        loop {
            match js.get_stream("STENCIL").await {
                Ok(_) => break,
                Err(e) if e.to_string().contains("not found") => break,
                Err(_) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "the cluster's JetStream never answered"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
}

/// A 3-node JetStream cluster on loopback, with its leader elected: the nodes' client ports and their
/// processes.
fn start_cluster(dir: &Path) -> (Vec<u16>, Vec<Child>) {
    let cluster = Cluster::new();
    let nodes = (0..3).map(|i| cluster.node(i, dir)).collect();
    wait_for_jetstream(cluster.ports[0]);
    (cluster.ports, nodes)
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Every message of stream `STENCIL`: (subject, JSON body), in order.
fn messages(port: u16) -> Vec<(String, serde_json::Value)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(format!("127.0.0.1:{port}"))
            .await
            .expect("connects to NATS");
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("STENCIL").await.expect("the stream exists");
        let last = stream
            .info()
            .await
            .expect("stream info")
            .state
            .last_sequence;
        let mut out = Vec::new();
        // Many requests in flight at once: the fault test reads 100,000 messages.
        let seqs: Vec<u64> = (1..=last).collect();
        for chunk in seqs.chunks(512) {
            let mut set = tokio::task::JoinSet::new();
            for &seq in chunk {
                let stream = stream.clone();
                set.spawn(async move { (seq, get_message(&stream, seq).await) });
            }
            let mut got: Vec<_> = set.join_all().await;
            got.sort_by_key(|(seq, _)| *seq);
            for (seq, m) in got {
                let m = m.unwrap_or_else(|e| panic!("message {seq}: {e}"));
                let body = serde_json::from_slice(&m.payload).expect("the body is JSON");
                out.push((m.subject.to_string(), body));
            }
        }
        out
    })
}

/// Message `seq`. Right after a node of a cluster died, JetStream may answer "temporarily unavailable"
/// (503) while it elects new leaders: that is retried, for up to 30 s, before the error counts.
async fn get_message(
    stream: &async_nats::jetstream::stream::Stream,
    seq: u64,
) -> Result<async_nats::jetstream::message::StreamMessage, String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match stream.get_raw_message(seq).await {
            Ok(m) => return Ok(m),
            Err(e) if tokio::time::Instant::now() < deadline && e.to_string().contains("503") => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn numbered(dir: &Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("app.log");
    let text: String = (0..n)
        .map(|i| {
            format!(
                "2026-11-30 12:00:00 INFO request {i} served in {} ms\n",
                i % 97
            )
        })
        .collect();
    std::fs::write(&path, text).expect("write input");
    path
}

fn ship(addr: &str, input: &Path, extra: &[&str]) -> std::process::ExitStatus {
    Command::new(env!("CARGO_BIN_EXE_stencil"))
        .args(["ship", "--once", "--streams", "1", "--batch-lines", "500"])
        .args(["--service", "web", "--endpoint"])
        .arg(format!("http://{addr}"))
        .args(["--api-key", "k1"])
        .args(extra)
        .arg(input)
        .stderr(Stdio::null())
        .status()
        .expect("ship runs")
}

fn start_intake(nats_port: u16, extra: &[&str]) -> (common::Reaped, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stencil"));
    command
        .args(["intake", "--listen", "127.0.0.1:0", "--api-key", "k1"])
        .arg("--nats-url")
        .arg(format!("nats://127.0.0.1:{nats_port}"))
        .args(extra);
    common::spawn_intake(command)
}

#[test]
fn every_shipped_log_is_a_jetstream_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let mut nats = start_nats(port, &dir.path().join("store"));
    let (mut intake, addr) = start_intake(port, &["--nats-subject", "stencil.{service}.logs"]);
    let input = numbered(dir.path(), 3000);
    assert!(ship(&addr, &input, &[]).success(), "ship --once exits 0");
    common::sigterm_and_wait(&mut intake);
    let got = messages(port);
    kill(&mut nats);
    let want: Vec<String> = std::fs::read_to_string(&input)
        .expect("input")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(got.len(), want.len(), "one message per log, no more");
    for ((subject, body), line) in got.iter().zip(&want) {
        assert_eq!(subject, "stencil.web.logs");
        assert_eq!(body["message"], line.as_str(), "{body}");
        assert_eq!(body["service"], "web");
        assert!(body["timestamp_ms"].is_i64(), "{body}");
        let tags = body["tags"].as_array().expect("tags");
        assert!(
            tags.iter()
                .any(|t| t.as_str().is_some_and(|t| t.starts_with("filename:"))),
            "{body}"
        );
    }
}

/// A log larger than the server's `max_payload` used to fail its batch forever (never acked, the
/// agent retrying). It now goes as pieces with `Stencil-Chunk` headers, and the pieces rebuild it.
#[test]
fn a_log_larger_than_max_payload_goes_in_pieces_that_rebuild_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let config = dir.path().join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nmax_payload: 4096\njetstream {{ store_dir: {:?} }}\n",
            dir.path().join("store")
        ),
    )
    .expect("config");
    let mut nats = Command::new("nats-server")
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server runs");
    common::wait_for(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let (mut intake, addr) = start_intake(port, &[]);
    let big: String = (0..3000)
        .map(|i| format!("{} ", i * 7919 % 10007))
        .collect();
    let lines = [
        "small before".to_string(),
        format!("big {big}"),
        "small after".to_string(),
    ];
    let input = dir.path().join("app.log");
    std::fs::write(&input, lines.join("\n") + "\n").expect("input");
    assert!(ship(&addr, &input, &[]).success(), "ship --once exits 0");
    common::sigterm_and_wait(&mut intake);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let raw: Vec<(Option<String>, Option<String>, Vec<u8>)> = rt.block_on(async {
        let client = async_nats::connect(format!("127.0.0.1:{port}"))
            .await
            .expect("connects");
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("STENCIL").await.expect("stream");
        let last = stream.info().await.expect("info").state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            let m = stream.get_raw_message(seq).await.expect("message");
            let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned());
            out.push((
                header("Stencil-Chunk"),
                header("Stencil-Chunk-Group"),
                m.payload.to_vec(),
            ));
        }
        out
    });
    kill(&mut nats);
    assert!(
        raw.iter().all(|(_, _, body)| body.len() <= 4096),
        "every message fits the server's limit"
    );
    // Reassemble: consecutive pieces of one group, in order.
    let mut logs: Vec<serde_json::Value> = Vec::new();
    let mut pieces: Vec<u8> = Vec::new();
    let mut chunked = 0;
    for (chunk, group, body) in &raw {
        match chunk {
            None => logs.push(serde_json::from_slice(body).expect("a whole log is JSON")),
            Some(c) => {
                chunked += 1;
                assert!(group.is_some(), "a piece names its group");
                let (i, n) = c.split_once('/').expect("I/N");
                pieces.extend_from_slice(body);
                if i == n {
                    logs.push(
                        serde_json::from_slice(&pieces).expect("the pieces are one JSON object"),
                    );
                    pieces.clear();
                }
            }
        }
    }
    assert!(chunked >= 4, "the big log went in pieces: {chunked}");
    let messages: Vec<&str> = logs
        .iter()
        .map(|l| l["message"].as_str().expect("message"))
        .collect();
    assert_eq!(
        messages,
        lines.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

#[test]
fn a_stream_whose_subjects_do_not_fit_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let mut nats = start_nats(port, &dir.path().join("store"));
    // The first intake creates STENCIL with `stencil.>`; a second one that publishes elsewhere must
    // refuse to start and say what to change.
    let (mut first, _) = start_intake(port, &[]);
    common::sigterm_and_wait(&mut first);
    let out = Command::new(env!("CARGO_BIN_EXE_stencil"))
        .args(["intake", "--listen", "127.0.0.1:0", "--nats-url"])
        .arg(format!("nats://127.0.0.1:{port}"))
        .args(["--nats-subject", "other.logs"])
        .output()
        .expect("intake runs");
    kill(&mut nats);
    assert!(!out.status.success(), "the intake refuses to start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("STENCIL") && err.contains("other.logs") && err.contains("--nats-subject"),
        "the error names the stream, the subject and the flag: {err}"
    );
    // And no server at all is a clear error too, not a hang.
    let out = Command::new(env!("CARGO_BIN_EXE_stencil"))
        .args(["intake", "--listen", "127.0.0.1:0", "--nats-url"])
        .arg(format!("nats://127.0.0.1:{}", common::free_port()))
        .output()
        .expect("intake runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("connecting to NATS"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_outage_is_never_acked_and_every_line_lands_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let port = common::free_port();
    let mut nats = start_nats(port, &store);
    let (mut intake, addr) = start_intake(port, &["--nats-ack-timeout-secs", "2"]);
    // JetStream goes away before the agent ships: no batch can be stored, so none may be acked.
    kill(&mut nats);
    let input = numbered(dir.path(), 5000);
    let data = dir.path().join("data");
    let addr2 = addr.clone();
    let input2 = input.clone();
    let data2 = data.clone();
    let agent = std::thread::spawn(move || {
        let data = data2.to_string_lossy().into_owned();
        ship(
            &addr2,
            &input2,
            &["--data-dir", &data, "--stall-timeout-secs", "120"],
        )
    });
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        !agent.is_finished(),
        "nothing was acked while JetStream was down"
    );
    let mut nats = start_nats(port, &store);
    let status = agent.join().expect("agent thread");
    assert!(
        status.success(),
        "ship --once exits 0 once JetStream is back"
    );
    common::sigterm_and_wait(&mut intake);
    let got = messages(port);
    kill(&mut nats);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (_, body) in &got {
        *seen
            .entry(body["message"].as_str().expect("message").to_owned())
            .or_default() += 1;
    }
    let want: Vec<String> = std::fs::read_to_string(&input)
        .expect("input")
        .lines()
        .map(str::to_owned)
        .collect();
    let missing: Vec<&String> = want.iter().filter(|l| !seen.contains_key(*l)).collect();
    assert!(
        missing.is_empty(),
        "{} lines never stored, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let duplicates = got.len() - seen.len();
    eprintln!(
        "{} messages for {} lines: {duplicates} duplicates",
        got.len(),
        want.len()
    );
}

/// Issue #12's fault test: two intakes publish into a 3-node JetStream cluster (replicas 3); one agent
/// ships 100,000 numbered lines with both intakes as endpoints; mid-run one intake and one NATS node
/// get SIGKILL. The agent's `--once` still exits 0 and every line is in the stream (duplicates, from
/// batches replayed after the kill, are counted and reported).
#[test]
fn a_fleet_loses_nothing_when_an_intake_and_a_nats_node_die() {
    const LINES: usize = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ports, mut nodes) = start_cluster(dir.path());
    let urls = ports
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let intake = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stencil"));
        command
            .args(["intake", "--listen", "127.0.0.1:0", "--api-key", "k1"])
            .args(["--nats-url", &urls, "--nats-replicas", "3"])
            .args(["--nats-ack-timeout-secs", "10"]);
        common::spawn_intake(command)
    };
    let (mut a, addr_a) = intake();
    let (mut b, addr_b) = intake();
    let input = dir.path().join("numbered.log");
    let text: String = (0..LINES)
        .map(|i| format!("line {i:06} of the fault test\n"))
        .collect();
    std::fs::write(&input, text).expect("write input");
    let endpoints = format!("http://{addr_a},http://{addr_b}");
    let data = dir.path().join("data");
    let agent = {
        let (input, data) = (input.clone(), data.clone());
        std::thread::spawn(move || {
            Command::new(env!("CARGO_BIN_EXE_stencil"))
                .args(["ship", "--once", "--streams", "2", "--batch-lines", "200"])
                .args(["--endpoint", &endpoints, "--api-key", "k1"])
                .arg("--data-dir")
                .arg(&data)
                .args(["--stall-timeout-secs", "120"])
                .arg(&input)
                .stderr(Stdio::null())
                .status()
                .expect("ship runs")
        })
    };
    // Mid-run: some lines are stored, the agent is still shipping.
    let started = std::time::Instant::now();
    while stored(ports[0]) < (LINES / 5) as u64 {
        assert!(!agent.is_finished(), "the agent ended before the faults");
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!agent.is_finished(), "the faults happen mid-run");
    kill(&mut a);
    kill(&mut nodes[1]);
    let status = agent.join().expect("agent thread");
    assert!(status.success(), "ship --once exits 0 after the faults");
    common::sigterm_and_wait(&mut b);
    let got = messages(ports[0]);
    for node in &mut nodes {
        kill(node);
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (_, body) in &got {
        *seen
            .entry(body["message"].as_str().expect("message").to_owned())
            .or_default() += 1;
    }
    let missing = (0..LINES)
        .filter(|i| !seen.contains_key(&format!("line {i:06} of the fault test")))
        .count();
    assert_eq!(missing, 0, "every line is in the stream");
    assert_eq!(seen.len(), LINES, "no line that was not shipped");
    eprintln!(
        "fault test: {} messages for {LINES} lines, {} duplicates",
        got.len(),
        got.len() - LINES
    );
}

/// A cluster that has no JetStream leader yet (one node of three up, so no quorum) does not stop the
/// intake at start: it waits, warning, and publishes once the other nodes are up. (It used to exit with
/// "looking up stream STENCIL: timed out".)
#[test]
fn the_intake_waits_at_start_for_a_cluster_without_a_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::new();
    let mut first = cluster.node(0, dir.path());
    let log = dir.path().join("intake.log");
    let mut intake = Command::new(env!("CARGO_BIN_EXE_stencil"))
        .args(["intake", "--listen", "127.0.0.1:0", "--api-key", "k1"])
        .arg("--nats-url")
        .arg(format!("nats://127.0.0.1:{}", cluster.ports[0]))
        .args(["--nats-replicas", "3"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("intake runs");
    // Without a quorum JetStream never answers: the intake must still be running, and say why.
    let waiting = std::time::Instant::now();
    common::wait_for(|| {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("JetStream is not answering yet"))
    });
    while waiting.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        intake.try_wait().expect("intake status").is_none(),
        "the intake gave up without a leader: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let mut others: Vec<Child> = (1..3).map(|i| cluster.node(i, dir.path())).collect();
    // Once the quorum is there the intake comes up (within its retry pause and one JetStream request
    // timeout of the election), and what it is sent is stored.
    let up = std::time::Instant::now();
    let addr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .find_map(|l| l.strip_prefix("stencil intake: listening on "))
        {
            break addr.trim().to_owned();
        }
        assert!(
            intake.try_wait().expect("intake status").is_none(),
            "the intake exited: {text}"
        );
        assert!(
            up.elapsed() < Duration::from_secs(60),
            "the intake never came up: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let input = numbered(dir.path(), 200);
    assert!(ship(&addr, &input, &[]).success());
    common::wait_for(|| stored(cluster.ports[0]) == 200);
    kill(&mut intake);
    kill(&mut first);
    for n in &mut others {
        kill(n);
    }
}

/// A configuration JetStream refuses (three replicas on a single server) is an error at start, at
/// once: only a JetStream that is not there yet is waited for.
#[test]
fn a_refused_stream_configuration_fails_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let mut nats = start_nats(port, &dir.path().join("store"));
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_stencil"))
        .args(["intake", "--listen", "127.0.0.1:0", "--api-key", "k1"])
        .arg("--nats-url")
        .arg(format!("nats://127.0.0.1:{port}"))
        .args(["--nats-replicas", "3"])
        .output()
        .expect("intake runs");
    kill(&mut nats);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(stderr.contains("creating stream STENCIL"), "{stderr}");
    assert!(stderr.contains("replicas"), "{stderr}");
}
