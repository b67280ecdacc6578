//! `stencil-config`: the config file of `stencil --config FILE`, apart from the command line so that it
//! can be fuzzed and tested on its own.
//!
//! - [`file`](mod@file): the TOML file, typed readers with units (`5MB`, `500ms`), and [`apply_keys!`], which fills
//!   a subcommand's arguments from its table where flags and environment said nothing.
//! - [`sources`]: `[[ship.sources]]` with the Datadog Agent's keys, checked and turned into the agent's
//!   sources.

pub mod file;
pub mod sources;

pub use file::{ConfigError, ConfigFile, Origins, UnitError};
