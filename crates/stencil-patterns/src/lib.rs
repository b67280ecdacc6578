//! `stencil-patterns`: the pattern engine. It turns log lines into the codec's canonical datums — a
//! template with typed holes per kind of line, dictionary entries for repeated strings, and one `Log` per
//! line — and never loses a byte. Pure: no I/O, no clock, no threads; the same input gives the same datums.
//!
//! - [`token`]: the one-pass tokenizer and its classes.
//! - [`miner`]: the bounded online template miner.
//! - [`values`]: value typing (compat profile) and the dictionary doorkeeper.
//! - [`dict`]: bounded dictionary namespaces.
//! - [`budget`]: count- and byte-capped stores with CLOCK eviction.
//! - [`json`] and [`schema`]: JSON records as a message plus typed columns, when that is byte-exact.
//! - [`engine`]: [`Engine`], which ties them together.
//!
//! This is the **compat profile**: the datum vocabulary Datadog peers understand (int, float, string and
//! dictionary values; `pos_list` in code points; templates without characters above U+FFFF). Lines that
//! are not valid UTF-8 are escaped reversibly ([`stencil_codec::escape`]) and tagged.
//!
//! ```
//! use stencil_patterns::{Engine, EngineConfig, Meta};
//!
//! let mut engine = Engine::new(EngineConfig { define_after: 1, ..EngineConfig::default() });
//! let mut datums = Vec::new();
//! let meta = Meta { timestamp: 1_700_000_000_000, ..Meta::default() };
//! let a = engine.encode(b"Accepted password for root from 10.0.0.5 port 22 ssh2", &meta, &mut datums);
//! let b = engine.encode(b"Accepted password for alice from 10.0.0.7 port 4022 ssh2", &meta, &mut datums);
//! assert_eq!(a.pattern, b.pattern);
//! assert!(b.structured);
//! ```

pub mod budget;
pub mod dict;
pub mod engine;
pub mod json;
pub mod miner;
pub mod roundtrip;
pub mod schema;
pub mod token;
pub mod values;

pub use budget::Budget;
pub use engine::{Encoded, Engine, EngineConfig, Meta, Stats};
