//! Test helpers: a tiny protobuf writer that builds wire bytes by hand, straight from the field numbers and
//! wire types in PROTOCOL.md (independent of prost and of our generated code), and decoder shortcuts.

#![allow(dead_code)]

use stencil_codec::{Compression, DecodeError, DecodedBatch, Generation, Limits, StreamDecoder};

/// A protobuf message under construction.
#[derive(Default, Clone)]
pub struct Pb(pub Vec<u8>);

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Pb {
    pub fn new() -> Self {
        Pb(Vec::new())
    }
    fn key(mut self, field: u32, wire_type: u8) -> Self {
        varint(&mut self.0, (u64::from(field) << 3) | u64::from(wire_type));
        self
    }
    /// Wire type 0 (uint32, uint64, int64 as two's complement, bool, enum).
    pub fn varint(self, field: u32, v: u64) -> Self {
        let mut s = self.key(field, 0);
        varint(&mut s.0, v);
        s
    }
    /// Wire type 0 with zigzag (sint64).
    pub fn sint(self, field: u32, v: i64) -> Self {
        self.varint(field, ((v << 1) ^ (v >> 63)) as u64)
    }
    /// Wire type 1 (double).
    pub fn double(self, field: u32, v: f64) -> Self {
        let mut s = self.key(field, 1);
        s.0.extend_from_slice(&v.to_le_bytes());
        s
    }
    /// Wire type 2 (string, bytes, embedded message, packed).
    pub fn bytes(self, field: u32, b: &[u8]) -> Self {
        let mut s = self.key(field, 2);
        varint(&mut s.0, b.len() as u64);
        s.0.extend_from_slice(b);
        s
    }
    pub fn str(self, field: u32, v: &str) -> Self {
        self.bytes(field, v.as_bytes())
    }
    pub fn msg(self, field: u32, m: Pb) -> Self {
        self.bytes(field, &m.0)
    }
    /// Packed repeated varints.
    pub fn packed(self, field: u32, vs: &[u64]) -> Self {
        let mut body = Vec::new();
        for &v in vs {
            varint(&mut body, v);
        }
        self.bytes(field, &body)
    }
    /// Packed repeated sint64.
    pub fn packed_sint(self, field: u32, vs: &[i64]) -> Self {
        let z: Vec<u64> = vs.iter().map(|&v| ((v << 1) ^ (v >> 63)) as u64).collect();
        self.packed(field, &z)
    }
    /// Packed repeated double.
    pub fn packed_double(self, field: u32, vs: &[f64]) -> Self {
        let body: Vec<u8> = vs.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.bytes(field, &body)
    }
}

/// v3 `LogDatum` wrappers: the oneof member number and the member message.
pub mod v3 {
    use super::Pb;
    pub fn dict(id: u64, value: &str) -> Pb {
        Pb::new().msg(1, Pb::new().varint(1, id).str(2, value))
    }
    pub fn pattern(id: u64, template: &str, pos: &[u64]) -> Pb {
        Pb::new().msg(2, Pb::new().varint(1, id).str(2, template).packed(4, pos))
    }
    pub fn schema(id: u64, keys: &[u64], message_key: u64, kinds: &[u8]) -> Pb {
        Pb::new().msg(
            3,
            Pb::new()
                .varint(1, id)
                .packed(2, keys)
                .varint(3, message_key)
                .bytes(4, kinds),
        )
    }
    pub fn log(log: Pb) -> Pb {
        Pb::new().msg(4, log)
    }
    pub fn sync(sync: Pb) -> Pb {
        Pb::new().msg(5, sync)
    }
    pub fn dict_delete(id: u64) -> Pb {
        Pb::new().msg(6, Pb::new().varint(1, id))
    }
    pub fn pattern_delete(id: u64) -> Pb {
        Pb::new().msg(7, Pb::new().varint(1, id))
    }
    /// `DynamicValue.string_value`.
    pub fn s(v: &str) -> Pb {
        Pb::new().str(3, v)
    }
    /// `DynamicValue.int_value`.
    pub fn i(v: i64) -> Pb {
        Pb::new().varint(1, v as u64)
    }
    /// `DynamicValue.dict_index`.
    pub fn d(id: u64) -> Pb {
        Pb::new().varint(4, id)
    }
    /// A `LogDatumSequence` of the given datums.
    pub fn seq(datums: &[Pb]) -> Vec<u8> {
        datums.iter().fold(Pb::new(), |s, d| s.msg(1, d.clone())).0
    }
}

/// v2 `Datum` wrappers.
pub mod v2 {
    use super::Pb;
    pub fn pattern(id: u64, template: &str, pos: &[u64]) -> Pb {
        Pb::new().msg(
            1,
            Pb::new()
                .varint(1, id)
                .str(2, template)
                .varint(3, pos.len() as u64)
                .packed(4, pos),
        )
    }
    pub fn dict(id: u64, value: &str) -> Pb {
        Pb::new().msg(3, Pb::new().varint(1, id).str(2, value))
    }
    pub fn log(log: Pb) -> Pb {
        Pb::new().msg(6, log)
    }
    pub fn tagset(value: Pb) -> Pb {
        Pb::new().msg(1, value)
    }
    pub fn seq(datums: &[Pb]) -> Vec<u8> {
        datums.iter().fold(Pb::new(), |s, d| s.msg(1, d.clone())).0
    }
}

/// A decoder with default limits, keeping datums.
pub fn decoder(generation: Generation, compression: Compression) -> StreamDecoder {
    StreamDecoder::new(generation, compression, Limits::default()).keep_datums(true)
}

/// Decodes uncompressed batches 0, 1, 2, … on a fresh v3 stream; returns every batch or the first error.
pub fn run_v3(batches: &[Vec<u8>]) -> Result<Vec<DecodedBatch>, DecodeError> {
    run(Generation::V3, batches)
}

/// Same for v2.
pub fn run_v2(batches: &[Vec<u8>]) -> Result<Vec<DecodedBatch>, DecodeError> {
    run(Generation::V2, batches)
}

fn run(generation: Generation, batches: &[Vec<u8>]) -> Result<Vec<DecodedBatch>, DecodeError> {
    let mut dec = decoder(generation, Compression::Identity);
    batches
        .iter()
        .enumerate()
        .map(|(i, b)| dec.decode(i as u32, b))
        .collect()
}
