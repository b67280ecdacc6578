//! Follow mode (`stencil ship`): each pipeline tails the files whose path hashes to it (new matches
//! are picked up every 500 ms, rotations followed by fingerprint, a file rotated away read to its end),
//! pipeline 0 also takes the TCP and stdin sources, until the stop token; then held partial lines and
//! pending events are emitted, flushed and acked.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::encoder::LineEncoder;
use super::run::{run_pipeline, Producer};
use super::summary::{ReadStats, Summary};
use super::{
    filename_tag, open_file, open_registry, skip_reason, source_name, warn_skipped, ShipError,
    ShipOptions,
};
use crate::checkpoint::Mailbox;
use crate::endpoints::Endpoints;
use crate::payload::Payload;
use crate::registry::{Leftover, Registry};
use crate::sources::files::Eol;
use crate::sources::tail::{FollowConfig, Follower};
use crate::sources::{Source, SourceInput, StartPosition};

/// Follows every source (files matching its paths and globs, new matches picked up; TCP; stdin) until
/// `stop` is cancelled, then emits held partial lines and pending events, flushes, waits for the acks and
/// returns the summary. A run whose only source is stdin ends at its end.
pub async fn ship_follow(
    sources: Vec<Source>,
    options: ShipOptions,
    endpoints: Endpoints,
    api_key: String,
    mailbox: Mailbox,
    stop: tokio_util::sync::CancellationToken,
) -> Result<Summary, ShipError> {
    crate::metrics::describe_sources(&sources);
    let registry = open_registry(&options)?;
    // Standard input alone is one source: one pipeline, which ends when it does.
    let only_stdin = sources
        .iter()
        .all(|s| matches!(s.input, SourceInput::Stdin));
    let n = if only_stdin {
        1
    } else {
        options.pipelines.max(1)
    };
    let mut producers: Vec<Producer> = Vec::with_capacity(n);
    for index in 0..n {
        let (reg, stop) = (registry.clone(), stop.clone());
        producers.push(Box::new(
            move |options: ShipOptions, sources: Arc<[Source]>, tx: mpsc::Sender<Payload>, read| {
                follow(index, n, reg, stop, options, sources, tx, read)
            },
        ));
    }
    run_pipeline(
        options,
        sources.into(),
        endpoints,
        api_key,
        mailbox,
        registry,
        producers,
    )
    .await
}

/// Reads the rest of a rotated file once, to its current end, under its own checkpoint and tagged with
/// the path it was rotated from. A file that cannot be read is warned about and skipped.
fn read_leftover(
    enc: &mut LineEncoder,
    src: usize,
    l: &Leftover,
    tag_as: &std::path::Path,
) -> Result<(), ShipError> {
    use std::io::Seek;
    let opened = std::fs::File::open(&l.path).and_then(|mut f| {
        f.seek(std::io::SeekFrom::Start(l.offset))?;
        Ok(f)
    });
    let read = match opened {
        Ok(f) => {
            let key: Arc<str> = Arc::from(l.source.as_str());
            enc.read_all(f, l.offset, src, &key, Some(&filename_tag(tag_as)))?
        }
        Err(e) => Err(e),
    };
    if let Err(e) = read {
        warn_skipped(
            &source_name(&enc.sources, src),
            &l.path,
            &e,
            skip_reason(&e),
        );
    }
    Ok(())
}

/// The per-source gauges of follow mode.
struct SourceGauges {
    watched: metrics::Gauge,
    lag: metrics::Gauge,
}

/// Pipeline `index` of `n`: follows the matching files whose path hashes to it (and the TCP and stdin
/// sources, for pipeline 0) until `stop`.
#[allow(clippy::too_many_arguments)]
fn follow(
    index: usize,
    n: usize,
    reg: Option<Arc<Mutex<Registry>>>,
    stop: tokio_util::sync::CancellationToken,
    options: ShipOptions,
    sources: Arc<[Source]>,
    tx: mpsc::Sender<Payload>,
    read_lines: Arc<AtomicU64>,
) -> Result<ReadStats, ShipError> {
    let mine = |path: &std::path::Path| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        path.hash(&mut h);
        (h.finish() as usize) % n == index
    };
    let config = FollowConfig {
        partial_line_timeout: if options.partial_line_timeout.is_zero() {
            Duration::from_secs(1)
        } else {
            options.partial_line_timeout
        },
        rotate_wait: if options.rotate_wait.is_zero() {
            FollowConfig::default().rotate_wait
        } else {
            options.rotate_wait
        },
        max_line: options.max_line(),
        ..FollowConfig::default()
    };
    let mut enc = LineEncoder::new(
        &options,
        sources.clone(),
        options.batch.max_wait,
        tx,
        read_lines,
    );
    let gauges: Vec<SourceGauges> = sources
        .iter()
        .map(|s| SourceGauges {
            watched: metrics::gauge!(crate::metrics::SOURCE_FILES_WATCHED, "source" => s.name.clone(), "pipeline" => index.to_string()),
            lag: metrics::gauge!(crate::metrics::SOURCE_LAG_BYTES, "source" => s.name.clone(), "pipeline" => index.to_string()),
        })
        .collect();
    // Each followed path, with the index of the source that named it first.
    let mut followers: BTreeMap<PathBuf, (usize, Follower)> = BTreeMap::new();
    // Files warned about, so that a file that stays unreadable is reported once, not every retry.
    let mut warned: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    // TCP sources listen on pipeline 0, each into its own channel.
    let mut net: Vec<(usize, mpsc::Receiver<crate::sources::tcp::NetLine>)> = Vec::new();
    for (i, source) in sources.iter().enumerate().filter(|_| index == 0) {
        if let SourceInput::Tcp(listener) = &source.input {
            let (net_tx, net_rx) = mpsc::channel(4096);
            crate::sources::tcp::spawn(
                listener,
                match options.tcp_max_connections {
                    0 => 256,
                    n => n,
                },
                options.max_line(),
                net_tx,
                stop.clone(),
            )
            .map_err(|error| ShipError::Listen {
                name: source.name.clone(),
                error,
            })?;
            net.push((i, net_rx));
        }
    }
    // Standard input, streamed (pipeline 0). A run whose only source it is ends at its end.
    let stdin_done = Arc::new(AtomicBool::new(false));
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<crate::sources::stdin::StdinLine>(4096);
    let stdin_src = sources
        .iter()
        .position(|s| matches!(s.input, SourceInput::Stdin))
        .filter(|_| index == 0);
    if stdin_src.is_some() {
        crate::sources::stdin::spawn(options.max_line(), stdin_tx, stdin_done.clone());
    } else {
        drop(stdin_tx);
    }
    let only_stdin = stdin_src.is_some()
        && sources
            .iter()
            .all(|s| matches!(s.input, SourceInput::Stdin));
    let stdin_key: Arc<str> = Arc::from("-");
    // `start_position = "end"`: files there at the first scan, without a checkpoint, start at their end.
    let mut at_end: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let mut last_scan: Option<Instant> = None;
    loop {
        let stdin_ended = only_stdin && stdin_done.load(Ordering::SeqCst) && stdin_rx.is_empty();
        let stopping = stop.is_cancelled() || stdin_ended;
        let now = Instant::now();
        if last_scan.is_none_or(|t| now.duration_since(t) >= Duration::from_millis(500)) {
            let first_scan = last_scan.is_none();
            last_scan = Some(now);
            let mut seen = std::collections::HashSet::new();
            for (i, source) in sources.iter().enumerate() {
                for path in source.files_now(false).unwrap_or_default() {
                    let Ok(abs) = std::fs::canonicalize(&path) else {
                        continue;
                    };
                    if source.excludes(&abs)
                        || !seen.insert(abs.clone())
                        || followers.contains_key(&abs)
                        || !mine(&abs)
                    {
                        continue;
                    }
                    if first_scan && source.start_position == StartPosition::End {
                        at_end.insert(abs.clone());
                    }
                    followers.insert(abs.clone(), (i, Follower::new(abs, config)));
                }
            }
            for (i, g) in gauges.iter().enumerate() {
                let mine = followers.values().filter(|(s, _)| *s == i);
                g.watched.set(mine.clone().count() as f64);
                g.lag.set(mine.map(|(_, f)| f.lag()).sum::<u64>() as f64);
            }
        }
        let mut any = false;
        for (path, (src, follower)) in followers.iter_mut() {
            let src = *src;
            let tag = filename_tag(path);
            // Both callbacks feed the encoder, one after the other (never nested).
            let shared = std::cell::RefCell::new((&mut enc, None::<ShipError>));
            let mut open = |p: &std::path::Path| -> std::io::Result<(u64, String)> {
                let (mut start, id, leftovers, resumed) = open_file(reg.as_ref(), p)?;
                let id = id.unwrap_or_else(|| p.to_string_lossy().into_owned());
                if at_end.remove(p) && !resumed {
                    start = std::fs::metadata(p)?.len();
                    if let Some(reg) = reg.as_ref() {
                        let mut reg = reg.lock().map_err(|_| {
                            std::io::Error::other("checkpoint registry lock poisoned")
                        })?;
                        reg.advance(&BTreeMap::from([(Arc::from(id.as_str()), start)]));
                    }
                }
                let mut guard = shared.borrow_mut();
                let (enc, failed) = &mut *guard;
                for l in &leftovers {
                    if let Err(e) = read_leftover(enc, src, l, p) {
                        failed.get_or_insert(e);
                    }
                }
                Ok((start, id))
            };
            let mut each = |key: &Arc<str>, line: &[u8], eol: Eol, offset: u64| {
                let mut guard = shared.borrow_mut();
                let (enc, failed) = &mut *guard;
                if failed.is_none() {
                    *failed = enc.line(src, line, eol, offset, key, Some(&tag)).err();
                }
            };
            let polled = follower.poll(now, &mut open, &mut each);
            if stopping {
                follower.close(now, &mut each);
            }
            let (enc, failed) = shared.into_inner();
            if let Some(e) = failed {
                return Err(e);
            }
            match polled {
                Ok(read) => {
                    any |= read;
                    warned.remove(path);
                }
                Err(e) => {
                    if warned.insert(path.clone()) {
                        warn_skipped(&source_name(&sources, src), path, &e, skip_reason(&e));
                        enc.stats.skipped_files += 1;
                    }
                }
            }
        }
        followers.retain(|_, (_, f)| !f.is_done());
        for (src, rx) in net.iter_mut() {
            while let Ok((line, eol, peer)) = rx.try_recv() {
                any = true;
                enc.line(*src, &line, eol, 0, &peer, Some(&peer))?;
            }
        }
        if let Some(src) = stdin_src {
            while let Ok((line, eol)) = stdin_rx.try_recv() {
                any = true;
                enc.line(src, &line, eol, 0, &stdin_key, None)?;
            }
        }
        enc.tick(Instant::now())?;
        if stopping {
            break;
        }
        if !any {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    enc.finish()
}
