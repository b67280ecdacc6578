//! Fuzz target: drives a `StreamDecoder` with arbitrary batches.
//!
//! Byte 0 picks the generation and codec; the rest is cut into batches by one-byte length prefixes (a
//! prefix of 255 takes all remaining bytes). Batch ids follow the stream (0, 1, 2, …) so that decoding goes
//! past the id check, except that bit 7 of byte 0 makes the first id 1. The decoder must never panic,
//! and must refuse everything after its first error.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use stencil_codec::{ErrorKind, StreamDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let (generation, compression, limits) = common::stream_setup(head);
    let mut decoder = StreamDecoder::new(generation, compression, limits);
    let mut id = u32::from(head >> 7);
    let mut failed = false;
    for batch in common::split_batches(rest) {
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
                }
                failed = true;
                let _ = (e.grpc_code(), e.kind.reason(), e.to_string());
            }
        }
        id = id.wrapping_add(1);
    }
});
