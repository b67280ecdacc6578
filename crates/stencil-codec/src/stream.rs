//! Stream-scoped zstd (the `stream-zstd` extension, `docs/extensions.md`).
//!
//! Per-batch zstd forgets everything between batches, so every batch pays again for the words the stream
//! has already sent. With this extension each end keeps **one zstd context per gRPC stream**: the agent
//! compresses each batch into the same frame and flushes a block at the batch's end
//! ([`StreamCompressor::compress_batch`]); the intake feeds each batch to its own context and gets the
//! batch's bytes back ([`StreamDecompressor::decompress_batch`]). Replays go on a new stream, so they are
//! re-compressed against a fresh context, never resent byte for byte.
//!
//! A batch must end exactly at a flushed block: the decompressor checks that, after the batch's bytes,
//! zstd waits for the header of a new block. A truncated block, a finished frame or trailing bytes are
//! [`ErrorKind::CorruptPayload`]; output past the cap is [`ErrorKind::DecompressionBomb`]; a frame whose
//! window exceeds the agreed one is refused by zstd itself (`windowLogMax`).

use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, DParameter, InBuffer, OutBuffer};

use crate::error::ErrorKind;

/// Smallest window log a peer may ask for (1 KiB, zstd's own floor).
pub const MIN_WINDOW_LOG: u32 = 10;
/// The window log both ends use unless they agree otherwise: 19 (512 KiB), zstd level 1's own window.
pub const DEFAULT_WINDOW_LOG: u32 = 19;
/// Largest window log the intake accepts by default (4 MiB).
pub const MAX_WINDOW_LOG: u32 = 22;
/// From this level on, zstd's match tables are sized to the stream's window (see [`StreamCompressor::new`]).
const LAZY_LEVEL: i32 = 4;
/// zstd's smallest hash and chain logs.
const MIN_TABLE_LOG: u32 = 6;

/// The `zstd` block header size: after a flushed block, the decoder asks for exactly this many bytes.
const BLOCK_HEADER: usize = 3;

fn zstd_error(what: &str, code: usize) -> std::io::Error {
    std::io::Error::other(format!("{what}: {}", zstd_safe::get_error_name(code)))
}

/// The agent's end: one zstd frame for the whole stream, one flushed block (or more) per batch.
pub struct StreamCompressor {
    cctx: CCtx<'static>,
}

impl std::fmt::Debug for StreamCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamCompressor").finish_non_exhaustive()
    }
}

impl StreamCompressor {
    /// A fresh context at `level` with a window of `2^window_log` bytes.
    pub fn new(level: i32, window_log: u32) -> std::io::Result<Self> {
        let mut cctx =
            CCtx::try_create().ok_or_else(|| std::io::Error::other("zstd: no memory"))?;
        cctx.set_parameter(CParameter::CompressionLevel(level))
            .map_err(|c| zstd_error("zstd level", c))?;
        cctx.set_parameter(CParameter::WindowLog(window_log))
            .map_err(|c| zstd_error("zstd window", c))?;
        if level >= LAZY_LEVEL {
            // The level's match tables are sized for windows of 2 MiB and more; a stream's window is
            // smaller. Tables of half and a quarter of the window's positions find almost every match:
            // at level 6 and the default window a context takes about 2.6 MiB instead of 3.9, for
            // 0.0–0.15 % more bytes on the corpora and 0.25–0.4 % on `bench cardinality`'s unique-heavy
            // levels (a quarter and an eighth cost 3.9 % there).
            cctx.set_parameter(CParameter::HashLog(
                window_log.saturating_sub(1).max(MIN_TABLE_LOG),
            ))
            .map_err(|c| zstd_error("zstd hash log", c))?;
            cctx.set_parameter(CParameter::ChainLog(
                window_log.saturating_sub(2).max(MIN_TABLE_LOG),
            ))
            .map_err(|c| zstd_error("zstd chain log", c))?;
        }
        // No checksum: each batch is checked by its layout, and a frame checksum only comes at the end.
        cctx.set_parameter(CParameter::ChecksumFlag(false))
            .map_err(|c| zstd_error("zstd checksum flag", c))?;
        Ok(StreamCompressor { cctx })
    }

    /// Compresses one batch into the stream's frame and flushes, so the intake can decode all of it now.
    pub fn compress_batch(&mut self, plain: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out: Vec<u8> = Vec::with_capacity(plain.len() / 2 + 64);
        let mut input = InBuffer::around(plain);
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let pos = out.len();
            let mut output = OutBuffer::around_pos(&mut out, pos);
            let remaining = self
                .cctx
                .compress_stream2(
                    &mut output,
                    &mut input,
                    zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_flush,
                )
                .map_err(|c| zstd_error("zstd stream compression", c))?;
            if remaining == 0 && input.pos() == plain.len() {
                return Ok(out);
            }
        }
    }
}

/// The intake's end: the stream's zstd context, fed one batch at a time.
pub struct StreamDecompressor {
    dctx: DCtx<'static>,
    window_log: u32,
}

impl std::fmt::Debug for StreamDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDecompressor")
            .field("window_log", &self.window_log)
            .finish_non_exhaustive()
    }
}

impl StreamDecompressor {
    /// A fresh context that refuses windows over `2^window_log` bytes.
    pub fn new(window_log: u32) -> Result<Self, ErrorKind> {
        let corrupt = |c| ErrorKind::CorruptPayload {
            codec: "stream-zstd",
            detail: zstd_safe::get_error_name(c).to_string(),
        };
        let mut dctx = DCtx::try_create().ok_or(ErrorKind::StateLimit {
            what: "stream-zstd context",
            limit: 0,
        })?;
        dctx.set_parameter(DParameter::WindowLogMax(window_log))
            .map_err(corrupt)?;
        Ok(StreamDecompressor { dctx, window_log })
    }

    /// The largest window log accepted.
    pub fn window_log(&self) -> u32 {
        self.window_log
    }

    /// Bytes the context holds now, and at most once its window is full: what the intake counts against
    /// the stream's state limit.
    pub fn memory(&self) -> usize {
        self.dctx
            .sizeof()
            .max(Self::planned_memory(self.window_log))
    }

    /// Bytes a context with this window needs once its window is full (window plus one block of 128 KiB
    /// and zstd's own tables, rounded up).
    pub fn planned_memory(window_log: u32) -> usize {
        (1usize << window_log) + (128 << 10) + (32 << 10)
    }

    /// Decompresses one batch: all of `data`, which must end at a flushed block, and at most `cap` bytes.
    pub fn decompress_batch(&mut self, data: &[u8], cap: usize) -> Result<Vec<u8>, ErrorKind> {
        let corrupt = |detail: String| ErrorKind::CorruptPayload {
            codec: "stream-zstd",
            detail,
        };
        if data.is_empty() {
            return Err(corrupt("an empty batch carries no flushed block".into()));
        }
        let mut out: Vec<u8> = Vec::with_capacity((data.len() * 4).min(cap.saturating_add(1)));
        let mut input = InBuffer::around(data);
        loop {
            if out.len() > cap {
                return Err(ErrorKind::DecompressionBomb { limit: cap });
            }
            if out.capacity() - out.len() < 1024 {
                let grow = out
                    .capacity()
                    .max(4096)
                    .min(cap + 1 - out.len().min(cap) + 1024);
                out.reserve(grow);
            }
            let pos = out.len();
            let mut output = OutBuffer::around_pos(&mut out, pos);
            let hint = self
                .dctx
                .decompress_stream(&mut output, &mut input)
                .map_err(|c| corrupt(zstd_safe::get_error_name(c).to_string()))?;
            let produced = output.pos() > pos;
            if out.len() > cap {
                return Err(ErrorKind::DecompressionBomb { limit: cap });
            }
            if hint == 0 {
                return Err(corrupt(
                    "the frame ended; a stream keeps one frame open".into(),
                ));
            }
            if input.pos() == data.len() && !produced {
                // All input read and nothing more comes out: the batch must end at a block boundary.
                if hint != BLOCK_HEADER {
                    return Err(corrupt(
                        "the batch does not end at a flushed block (truncated)".into(),
                    ));
                }
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches() -> Vec<Vec<u8>> {
        (0..20)
            .map(|i| {
                format!("batch {i}: GET /api/v1/items/{} 200 {}ms\n", i * 7, i % 5)
                    .repeat(i + 1)
                    .into_bytes()
            })
            .collect()
    }

    #[test]
    fn batches_round_trip_through_one_context() {
        let mut c = StreamCompressor::new(1, DEFAULT_WINDOW_LOG).expect("cctx");
        let mut d = StreamDecompressor::new(DEFAULT_WINDOW_LOG).expect("dctx");
        let mut total = 0;
        for b in batches() {
            let packed = c.compress_batch(&b).expect("compress");
            total += packed.len();
            assert_eq!(d.decompress_batch(&packed, 1 << 20).expect("decompress"), b);
        }
        // The context carries over: far smaller than compressing each batch alone.
        let alone: usize = batches()
            .iter()
            .map(|b| zstd::bulk::compress(b, 1).expect("zstd").len())
            .sum();
        assert!(total < alone, "stream {total} vs per-batch {alone}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut c = StreamCompressor::new(1, DEFAULT_WINDOW_LOG).expect("cctx");
        let bs = batches();
        let first = c.compress_batch(&bs[0]).expect("compress");
        let second = c.compress_batch(&bs[5]).expect("compress");
        for cut in 0..second.len() {
            let mut d = StreamDecompressor::new(DEFAULT_WINDOW_LOG).expect("dctx");
            d.decompress_batch(&first, 1 << 20).expect("first");
            assert!(
                d.decompress_batch(&second[..cut], 1 << 20).is_err(),
                "cut at {cut} of {}",
                second.len()
            );
        }
    }

    #[test]
    fn cap_and_window_are_enforced() {
        let mut c = StreamCompressor::new(1, DEFAULT_WINDOW_LOG).expect("cctx");
        let big = vec![b'a'; 100_000];
        let packed = c.compress_batch(&big).expect("compress");
        let mut d = StreamDecompressor::new(DEFAULT_WINDOW_LOG).expect("dctx");
        assert_eq!(
            d.decompress_batch(&packed, 99_999),
            Err(ErrorKind::DecompressionBomb { limit: 99_999 })
        );
        let mut wide = StreamCompressor::new(1, 23).expect("cctx");
        let packed = wide.compress_batch(b"hello").expect("compress");
        let mut d = StreamDecompressor::new(20).expect("dctx");
        assert!(matches!(
            d.decompress_batch(&packed, 1 << 20),
            Err(ErrorKind::CorruptPayload { .. })
        ));
    }

    #[test]
    fn a_finished_frame_is_refused() {
        let whole = zstd::bulk::compress(b"one frame", 1).expect("zstd");
        let mut d = StreamDecompressor::new(DEFAULT_WINDOW_LOG).expect("dctx");
        assert!(d.decompress_batch(&whole, 1 << 20).is_err());
    }
}
