//! Fuzz target: arbitrary bytes, cut into records at `\n`, go through the pattern engine, the v3 encoder
//! or the default wire's (both extensions, each source structured or raw) and the real decoder, with tiny
//! budgets so that eviction runs constantly. JSON records may place their message anywhere
//! (`json-order`), on a stream that agreed to it or, as their text, on one that did not. Every record
//! must come back byte for byte, and nothing may panic. The engine's tokenizer, which remembers the
//! chunks it cut, must cut every text record exactly as the memo-free `tokenize` does.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stencil_codec::Extensions;
use stencil_patterns::roundtrip::round_trip_on;
use stencil_patterns::token::{tokenize, Tokenizer};
use stencil_patterns::{Budget, EngineConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let records: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let config = EngineConfig {
        define_after: u32::from(knobs & 1) + 1,
        patterns: Budget::new(4, 8 << 10),
        values: Budget::new(4, 2 << 10),
        meta: Budget::new(4, 2 << 10),
        schemas: Budget::new(2, 4 << 10),
        keys: Budget::new(8, 4 << 10),
        json_order: knobs & 0x40 != 0,
        ..EngineConfig::default()
    };
    let batch = usize::from(knobs >> 1) % 7 + 1;
    // The top bit picks the wire (the batch size uses the bits below it modulo 7); with bit 0 clear,
    // the extensions' intake does not know `json-order`.
    let wire = if knobs & 0x80 != 0 {
        Extensions {
            json_order: knobs & 1 != 0,
            ..Extensions::ALL
        }
    } else {
        Extensions::default()
    };
    let mut tokenizer = Tokenizer::new();
    let (mut remembered, mut plain) = (Vec::new(), Vec::new());
    for line in records.iter().filter_map(|r| std::str::from_utf8(r).ok()) {
        tokenizer.tokenize(line, &mut remembered);
        tokenize(line, &mut plain);
        assert_eq!(remembered, plain, "{line:?}");
    }
    let trip = round_trip_on(&records, config, batch, wire)
        .expect("the codec accepts what the engine emits");
    assert_eq!(trip.rebuilt.len(), records.len());
    for (got, want) in trip.rebuilt.iter().zip(&records) {
        assert_eq!(got.as_slice(), *want);
    }
});
