//! Configuration: TOML and CLI into a validated [`Config`].

pub mod defaults;
mod model;

pub use model::*;
