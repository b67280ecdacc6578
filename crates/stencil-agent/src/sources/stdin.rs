//! Standard input as a streaming source: `journalctl -f | stencil ship -`, `kubectl logs -f … | stencil
//! ship -`. Lines are sent as they come (batches flush on age, as for files); at end of input the source
//! says so, and a run whose only input is stdin ends gracefully. Standard input cannot be re-read, so its
//! lines carry no checkpoint.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::sources::files::{Eol, Splitter};

/// One line from standard input and its terminator.
pub type StdinLine = (Vec<u8>, Eol);

/// Reads standard input on a thread of its own, sending each line to `lines`; sets `done` at end of
/// input (or on a read error, which is logged).
pub fn spawn(max_line: usize, lines: mpsc::Sender<StdinLine>, done: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut splitter = Splitter::new(0, max_line);
        let mut buf = vec![0u8; 64 << 10];
        let mut stdin = std::io::stdin().lock();
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "reading standard input failed; treating it as its end");
                    break;
                }
            };
            let mut out = Vec::new();
            splitter.feed(&buf[..n], &mut |line, eol, _| {
                out.push((line.to_vec(), eol))
            });
            for line in out {
                if lines.blocking_send(line).is_err() {
                    return;
                }
            }
        }
        let mut out = Vec::new();
        splitter.flush(&mut |line, eol, _| out.push((line.to_vec(), eol)));
        for line in out {
            let _ = lines.blocking_send(line);
        }
        done.store(true, Ordering::SeqCst);
    });
}
