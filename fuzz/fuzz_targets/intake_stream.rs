//! Fuzz target: drives the intake's stream handler (decode → sink → ack) with arbitrary batches.
//!
//! Byte 0 picks the generation and codec; the rest is cut into batches by one-byte length prefixes (255 =
//! the rest), each preceded by one byte that, when odd, skips the expected batch id. The handler must never
//! panic, must ack exactly the batch it was given, and must refuse everything after its first rejection.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use stencil_intake::stream::StreamHandler;
use stencil_intake::{MemorySink, StreamInfo};
use stencil_proto::stateful::StatefulBatch;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, mut rest)) = data.split_first() else {
        return;
    };
    let (generation, compression, limits) = common::stream_setup(head);
    let info = StreamInfo {
        id: 1,
        generation,
        peer: None,
    };
    let sink = MemorySink::new();
    let mut handler = StreamHandler::new(info, compression, limits, Arc::new(sink.clone()));
    runtime().block_on(async {
        let mut id = 0u32;
        let mut failed = false;
        while let [skip, len, tail @ ..] = rest {
            let take = if *len == 255 {
                tail.len()
            } else {
                (*len as usize).min(tail.len())
            };
            let (batch, tail) = tail.split_at(take);
            rest = tail;
            id = id.wrapping_add(u32::from(skip & 1));
            match handler
                .handle(StatefulBatch {
                    batch_id: id,
                    data: batch.to_vec().into(),
                })
                .await
            {
                Ok(ack) => {
                    assert!(!failed, "a batch was acked after a rejection");
                    assert_eq!((ack.batch_id, ack.status), (id, 1));
                }
                Err(status) => {
                    assert_ne!(status.code(), tonic_code_ok());
                    failed = true;
                }
            }
            id = id.wrapping_add(1);
        }
    });
});

fn tonic_code_ok() -> tonic::Code {
    tonic::Code::Ok
}
