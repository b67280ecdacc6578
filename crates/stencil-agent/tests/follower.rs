//! The file tail against a model of the files (#16 item 7), the way Vector tests its file watcher: a
//! property test drives random writes, renames (logrotate with `create`, the writer keeping its old
//! descriptor until it reopens), copytruncates and deletes on real files, polls a [`Follower`] in
//! between, and checks that every line that must have been read was read, exactly once, in order.
//!
//! What may legitimately be missed: lines written to `app.log` after the last poll and then truncated
//! away before the next one, and lines of a file the follower never saw at the path (created and
//! deleted, or rotated away, between two polls).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use stencil_agent::sources::files::Eol;
use stencil_agent::sources::tail::{FollowConfig, Follower};

#[derive(Debug, Clone)]
enum Op {
    /// The writer appends this many lines to the file it holds.
    Write(u8),
    /// `app.log` → `app.log.N`, and a new empty `app.log`; the writer keeps its descriptor.
    Rename,
    /// The writer reopens `app.log` (creating it if needed).
    Reopen,
    /// copytruncate: `app.log` is cut to 0 bytes.
    Truncate,
    /// `app.log` is deleted; the writer keeps its descriptor.
    Delete,
    /// The follower polls.
    Poll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..6).prop_map(Op::Write),
        1 => Just(Op::Rename),
        1 => Just(Op::Reopen),
        1 => Just(Op::Truncate),
        1 => Just(Op::Delete),
        4 => Just(Op::Poll),
    ]
}

/// The model: files are numbered as they are created (inode numbers get reused once a file is gone).
struct World {
    dir: tempfile::TempDir,
    writer: Option<std::fs::File>,
    /// The file the writer appends to.
    writer_file: Option<u64>,
    /// The file at `app.log`.
    at_path: Option<u64>,
    files_created: u64,
    next_line: u32,
    rotations: u32,
    /// Lines per file, with whether each may be lost.
    written: BTreeMap<u64, Vec<(u32, bool)>>,
    /// Lines written since the last poll, per file.
    since_poll: Vec<(u64, u32)>,
    /// Files that were at the path when the follower polled: it follows them to their end.
    followed: HashSet<u64>,
}

impl World {
    fn app(&self) -> std::path::PathBuf {
        self.dir.path().join("app.log")
    }

    fn create_at_path(&mut self) {
        std::fs::File::create(self.app()).expect("create");
        self.files_created += 1;
        self.at_path = Some(self.files_created);
    }

    fn reopen(&mut self) {
        if self.at_path.is_none() {
            self.create_at_path();
        }
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.app())
            .expect("open");
        self.writer_file = self.at_path;
        self.writer = Some(f);
    }

    fn polled(&mut self) {
        self.since_poll.clear();
        if let Some(id) = self.at_path {
            self.followed.insert(id);
        }
    }

    fn may_lose_unpolled_at_path(&mut self) {
        let Some(id) = self.at_path else {
            return;
        };
        let unpolled: HashSet<u32> = self
            .since_poll
            .iter()
            .filter(|(f, _)| *f == id)
            .map(|(_, n)| *n)
            .collect();
        if let Some(lines) = self.written.get_mut(&id) {
            for (n, lost) in lines.iter_mut() {
                if unpolled.contains(n) {
                    *lost = true;
                }
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Write(k) => {
                if self.writer.is_none() {
                    self.reopen();
                }
                let (Some(f), Some(id)) = (self.writer.as_mut(), self.writer_file) else {
                    return;
                };
                for _ in 0..*k {
                    let n = self.next_line;
                    self.next_line += 1;
                    writeln!(f, "line {n:06}").expect("write");
                    self.written.entry(id).or_default().push((n, false));
                    self.since_poll.push((id, n));
                }
            }
            Op::Rename => {
                if self.at_path.is_some() {
                    self.rotations += 1;
                    let to = self.dir.path().join(format!("app.log.{}", self.rotations));
                    std::fs::rename(self.app(), to).expect("rename");
                    self.create_at_path();
                }
            }
            Op::Reopen => self.reopen(),
            Op::Truncate => {
                if self.at_path.is_some() {
                    self.may_lose_unpolled_at_path();
                    std::fs::OpenOptions::new()
                        .write(true)
                        .truncate(true)
                        .open(self.app())
                        .expect("truncate");
                }
            }
            Op::Delete => {
                if self.at_path.take().is_some() {
                    std::fs::remove_file(self.app()).expect("delete");
                }
            }
            Op::Poll => self.polled(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_line_that_must_be_read_is_read_once_in_order(ops in proptest::collection::vec(op(), 1..60)) {
        let mut world = World {
            dir: tempfile::tempdir().expect("tempdir"),
            writer: None,
            writer_file: None,
            at_path: None,
            files_created: 0,
            next_line: 0,
            rotations: 0,
            written: BTreeMap::new(),
            since_poll: Vec::new(),
            followed: HashSet::new(),
        };
        world.reopen();
        let config = FollowConfig {
            partial_line_timeout: Duration::from_secs(3600),
            rotate_wait: Duration::from_secs(3600),
            retry_after: Duration::ZERO,
            max_line: 1 << 20,
        };
        let mut follower = Follower::new(world.app(), config);
        let mut read: Vec<u32> = Vec::new();
        let mut opened = 0u32;
        let start = Instant::now();
        let mut poll = |follower: &mut Follower, at: Instant, read: &mut Vec<u32>| {
            let mut open = |_: &Path| -> std::io::Result<(u64, String)> {
                opened += 1;
                Ok((0, format!("source {opened}")))
            };
            let mut each = |_: &Arc<str>, line: &[u8], eol: Eol, _: u64| {
                assert_eq!(eol, Eol::Lf, "whole lines only");
                let text = std::str::from_utf8(line).expect("utf-8");
                read.push(text[5..].parse().expect("a numbered line"));
            };
            follower.poll(at, &mut open, &mut each).expect("poll");
        };
        for (i, op) in ops.iter().enumerate() {
            world.apply(op);
            if matches!(op, Op::Poll) {
                poll(&mut follower, start + Duration::from_millis(i as u64), &mut read);
            }
        }
        poll(&mut follower, start + Duration::from_secs(1), &mut read);
        world.polled();
        follower.close(start + Duration::from_secs(2), &mut |_, line, _, _| {
            let text = std::str::from_utf8(line).expect("utf-8");
            read.push(text[5..].parse().expect("a numbered line"));
        });

        let mut seen = HashSet::new();
        for n in &read {
            prop_assert!(seen.insert(*n), "line {} read twice", n);
        }
        for (ino, lines) in &world.written {
            let mut last = None;
            for (n, may_lose) in lines {
                if !may_lose && world.followed.contains(ino) {
                    prop_assert!(seen.contains(n), "line {} (file {}) was never read", n, ino);
                }
                // Within one file, lines are read in the order they were written.
                if let Some(pos) = read.iter().position(|r| r == n) {
                    if let Some(prev) = last {
                        prop_assert!(pos > prev, "line {} read out of order", n);
                    }
                    last = Some(pos);
                }
            }
        }
    }
}

/// A rotated file is read on while it grows, and closed once it has been idle for `rotate_wait`.
#[test]
fn a_rotated_file_is_drained_then_closed_after_rotate_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app.log");
    let mut writer = std::fs::File::create(&app).expect("create");
    writeln!(writer, "line 000000").expect("write");
    let config = FollowConfig {
        rotate_wait: Duration::from_secs(5),
        ..FollowConfig::default()
    };
    let mut follower = Follower::new(app.clone(), config);
    let mut lines = Vec::new();
    let t0 = Instant::now();
    let poll = |f: &mut Follower, at: Instant, lines: &mut Vec<String>| {
        f.poll(
            at,
            &mut |p: &Path| Ok((0, p.display().to_string())),
            &mut |_, l, _, _| lines.push(String::from_utf8_lossy(l).into_owned()),
        )
        .expect("poll")
    };
    poll(&mut follower, t0, &mut lines);
    std::fs::rename(&app, dir.path().join("app.log.1")).expect("rotate");
    std::fs::File::create(&app).expect("new");
    poll(&mut follower, t0 + Duration::from_secs(1), &mut lines);
    assert_eq!(follower.draining(), 1);
    writeln!(writer, "line 000001").expect("write to the old descriptor");
    poll(&mut follower, t0 + Duration::from_secs(4), &mut lines);
    assert_eq!(
        follower.draining(),
        1,
        "still within rotate_wait of its last growth"
    );
    poll(&mut follower, t0 + Duration::from_secs(10), &mut lines);
    assert_eq!(follower.draining(), 0, "idle for rotate_wait: closed");
    assert_eq!(lines, ["line 000000", "line 000001"]);
}
