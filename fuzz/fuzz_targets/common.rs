//! What the decoder fuzz targets share: reading the stream's generation, codec and limits from the
//! first input byte, cutting the rest into batches, and checking the decoder's contract over them.

#![allow(dead_code)] // each target uses part of it

use stencil_codec::{Compression, ErrorKind, Generation, GrpcCode, Limits, StreamDecoder};

/// Generation (bit 0), codec ((byte >> 1) % 3), and small limits so that limit paths are reached.
pub fn stream_setup(head: u8) -> (Generation, Compression, Limits) {
    let generation = if head & 1 == 0 {
        Generation::V3
    } else {
        Generation::V2
    };
    let compression = match (head >> 1) % 3 {
        0 => Compression::Identity,
        1 => Compression::ZSTD,
        _ => Compression::GZIP,
    };
    let limits = Limits {
        max_decompressed_bytes: 1 << 20,
        max_output_bytes: 4 << 20,
        max_state_bytes: 1 << 20,
        ..Limits::default()
    };
    (generation, compression, limits)
}

/// Cuts `rest` into batches by one-byte length prefixes (255 takes all remaining bytes).
pub fn split_batches(mut rest: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let take = if len == 255 {
            tail.len()
        } else {
            (len as usize).min(tail.len())
        };
        let (batch, tail) = tail.split_at(take);
        out.push(batch);
        rest = tail;
    }
    out
}

/// Feeds `batches` to `decoder` with ids from `first_id`: it must never panic, must accept nothing after
/// its first error (later batches are `StreamFailed`), and with `strict_codes` its first error must be
/// `INVALID_ARGUMENT` or `RESOURCE_EXHAUSTED`.
pub fn drive<'a>(
    decoder: &mut StreamDecoder,
    first_id: u32,
    batches: impl IntoIterator<Item = &'a [u8]>,
    strict_codes: bool,
) {
    let mut id = first_id;
    let mut failed = false;
    for batch in batches {
        match decoder.decode(id, batch) {
            Ok(decoded) => {
                assert!(!failed, "a failed stream accepted a batch");
                for log in &decoded.logs {
                    let _ = log.tags().count();
                }
            }
            Err(e) => {
                if failed {
                    assert_eq!(e.kind, ErrorKind::StreamFailed);
                } else if strict_codes {
                    assert!(
                        matches!(
                            e.grpc_code(),
                            GrpcCode::InvalidArgument | GrpcCode::ResourceExhausted
                        ),
                        "{e}"
                    );
                }
                failed = true;
                let _ = (e.grpc_code(), e.kind.reason(), e.to_string());
            }
        }
        id = id.wrapping_add(1);
    }
}
