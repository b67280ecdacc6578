//! Fuzz target: arbitrary text as a v3 JSON schema key path (the input of the 107-byte message that
//! used to overflow the intake's stack). Splitting must refuse paths deeper than the limit; what it
//! accepts is inserted into a document that is serialized and dropped, and joining the segments gives
//! back a path that splits the same. Nothing may panic or overflow the stack.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stencil_codec::json::{insert_at, join_key_path, split_key_path, MAX_KEY_PATH_DEPTH};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(segments) = split_key_path(text) else {
        return;
    };
    assert!(segments.len() <= MAX_KEY_PATH_DEPTH);
    let mut doc = serde_json::Map::new();
    if insert_at(&mut doc, &segments, serde_json::Value::Null).is_ok() {
        let _ = serde_json::to_string(&doc).expect("serializes");
    }
    let joined = join_key_path(&segments);
    assert_eq!(
        split_key_path(&joined).expect("its own join splits"),
        segments
    );
});
