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
use stencil_codec::StreamDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let (generation, compression, limits) = common::stream_setup(head);
    let mut decoder = StreamDecoder::new(generation, compression, limits);
    common::drive(
        &mut decoder,
        u32::from(head >> 7),
        common::split_batches(rest),
        false,
    );
});
