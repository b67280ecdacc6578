//! One pass (`stencil ship --once`): every input of every source is planned up front (each file with
//! the rest of the files it was rotated to while the agent was down, read first, and each file once
//! however often it is named), split over the pipelines, read to its end, and acked.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
use crate::sources::{Source, SourceInput};

/// An input of one pass: a file path, or stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Input {
    /// A file (its absolute path is the `filename:` tag).
    File(PathBuf),
    /// Standard input.
    Stdin,
}

/// One file to read in a single pass: where to start, its checkpoint id, and the path its lines are tagged
/// with (`filename:`), which differs from the file's own for the rest of a rotated file.
struct Planned {
    input: Input,
    /// Index of its source.
    source: usize,
    start: u64,
    id: Option<String>,
    tag_as: Option<PathBuf>,
}

/// Reads every input to its end and produces payloads into `tx` (blocking; run on a blocking thread).
/// A file that cannot be opened or read is warned about, counted and skipped; the others are shipped.
fn produce(
    inputs: Vec<Planned>,
    options: ShipOptions,
    sources: Arc<[Source]>,
    tx: mpsc::Sender<Payload>,
    read_lines: Arc<std::sync::atomic::AtomicU64>,
) -> Result<ReadStats, ShipError> {
    let mut enc = LineEncoder::new(&options, sources, Duration::MAX, tx, read_lines);
    for Planned {
        input,
        source: src,
        start,
        id,
        tag_as,
    } in inputs
    {
        let name = source_name(&enc.sources, src);
        let read = match &input {
            Input::File(path) => {
                let opened = std::fs::File::open(path).and_then(|mut f| {
                    use std::io::Seek;
                    if f.metadata()?.is_dir() {
                        return Err(std::io::Error::other("a directory, not a file"));
                    }
                    f.seek(std::io::SeekFrom::Start(start))?;
                    Ok(f)
                });
                let f = match opened {
                    Ok(f) => f,
                    Err(e) => {
                        warn_skipped(&name, path, &e, skip_reason(&e));
                        enc.stats.skipped_files += 1;
                        continue;
                    }
                };
                let key: Arc<str> = Arc::from(
                    id.clone()
                        .unwrap_or_else(|| path.to_string_lossy().into_owned()),
                );
                let tag = filename_tag(tag_as.as_deref().unwrap_or(path));
                enc.read_all(f, start, src, &key, Some(&tag))?
            }
            Input::Stdin => enc.read_all(std::io::stdin(), 0, src, &Arc::from("-"), None)?,
        };
        if let Err(e) = read {
            let path = match &input {
                Input::File(path) => path.clone(),
                Input::Stdin => PathBuf::from("stdin"),
            };
            warn_skipped(&name, &path, &e, skip_reason(&e));
            enc.stats.skipped_files += 1;
        }
    }
    enc.finish()
}

/// Ships every input of `sources` once over `endpoints` with `api_key` and waits until everything is
/// acked. A path that does not exist or a glob that matches nothing is an error before anything is
/// sent.
pub async fn ship_once(
    sources: Vec<Source>,
    options: ShipOptions,
    endpoints: Endpoints,
    api_key: String,
    mailbox: Mailbox,
) -> Result<Summary, ShipError> {
    let mut inputs = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        match &source.input {
            SourceInput::Files { .. } => {
                inputs.extend(
                    source
                        .files_now(true)?
                        .into_iter()
                        .map(|p| (i, Input::File(p))),
                );
            }
            SourceInput::Stdin => inputs.push((i, Input::Stdin)),
            SourceInput::Tcp(_) => return Err(ShipError::TcpInOnce(source.name.clone())),
        }
    }
    crate::metrics::describe_sources(&sources);
    let registry = open_registry(&options)?;
    let mut skipped = 0;
    // One unit per input: the rest of its rotated predecessors (if any), then the input itself, so that
    // all go through the same pipeline, in order.
    let mut planned: Vec<Vec<Planned>> = Vec::with_capacity(inputs.len());
    // The same file named twice (or by a glob and a path, or through a symlink) is read once.
    let mut seen = std::collections::HashSet::new();
    for (src, input) in inputs {
        let name = source_name(&sources, src);
        let unit = match &input {
            Input::File(path) => {
                use std::os::unix::fs::MetadataExt;
                let abs = match std::fs::canonicalize(path) {
                    Ok(abs) => abs,
                    Err(e) => {
                        warn_skipped(&name, path, &e, skip_reason(&e));
                        skipped += 1;
                        continue;
                    }
                };
                if let Ok(m) = std::fs::metadata(&abs) {
                    if !seen.insert((m.dev(), m.ino())) {
                        tracing::info!(file = %abs.display(), "named more than once; read once");
                        continue;
                    }
                }
                let (start, id, leftovers, _) = match open_file(registry.as_ref(), &abs) {
                    Ok(opened) => opened,
                    Err(e) => {
                        warn_skipped(&name, &abs, &e, skip_reason(&e));
                        skipped += 1;
                        continue;
                    }
                };
                let mut unit: Vec<Planned> = leftovers
                    .into_iter()
                    .map(|l| Planned {
                        input: Input::File(l.path),
                        source: src,
                        start: l.offset,
                        id: Some(l.source),
                        tag_as: Some(abs.clone()),
                    })
                    .collect();
                unit.push(Planned {
                    input: Input::File(abs),
                    source: src,
                    start,
                    id,
                    tag_as: None,
                });
                unit
            }
            Input::Stdin => vec![Planned {
                input,
                source: src,
                start: 0,
                id: None,
                tag_as: None,
            }],
        };
        planned.push(unit);
    }
    // Each input belongs to exactly one pipeline (round robin, in order).
    let n = options.pipelines.max(1).min(planned.len().max(1));
    let mut groups: Vec<Vec<Planned>> = (0..n).map(|_| Vec::new()).collect();
    for (i, unit) in planned.into_iter().enumerate() {
        groups[i % n].extend(unit);
    }
    let producers: Vec<Producer> = groups
        .into_iter()
        .map(|group| {
            Box::new(
                move |options: ShipOptions,
                      sources: Arc<[Source]>,
                      tx: mpsc::Sender<Payload>,
                      read| { produce(group, options, sources, tx, read) },
            ) as Producer
        })
        .collect();
    let mut summary = run_pipeline(
        options,
        sources.into(),
        endpoints,
        api_key,
        mailbox,
        registry,
        producers,
    )
    .await?;
    summary.skipped_files += skipped;
    Ok(summary)
}
