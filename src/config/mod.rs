//! Configuration: TOML and CLI into a validated [`Config`].
