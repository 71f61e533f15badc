//! Configuration: TOML and CLI into a validated [`Config`].
//!
//! The path is always the same: text (or flags) → [`raw::RawConfig`] (serde, spans kept) →
//! [`quick::Overrides`] applied → validation → [`Config`]. Errors are [`ConfigError`]s that
//! name the file, line, column and field.

pub mod affinity;
mod connection;
pub mod defaults;
pub mod duration;
mod error;
pub mod fd_budget;
pub mod limits;
mod model;
pub mod quick;
pub mod raw;
pub mod size;
mod summary;
pub(crate) use summary::algorithm_name;
mod validate;

use std::path::Path;

pub use error::{ConfigError, Location, Source};
pub use model::*;
pub use quick::{BackendSpec, HealthCheckSpec, Overrides};
pub use validate::{algorithm, backend_from_spec, engine_kind, mode};

use raw::RawConfig;

impl Config {
    /// Reads and validates a TOML file; errors name `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        Self::from_file_with(path, &Overrides::default())
    }

    /// Reads a TOML file, applies command-line `overrides`, and validates the result.
    pub fn from_file_with(
        path: impl AsRef<Path>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: origin.clone(),
            source,
        })?;
        Self::from_toml_str_on(&text, &origin, overrides, &Host::this_process())
    }

    /// Validates TOML `text`; errors name it `origin` (such as a file path or `<string>`).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Self::from_toml_str_on(text, origin, &Overrides::default(), &Host::this_process())
    }

    /// [`Config::from_toml_str`] with `overrides` applied, and with `available_cpus` standing
    /// for the process's affinity mask (so that CPU checks can be tested on any machine).
    pub fn from_toml_str_with(
        text: &str,
        origin: &str,
        overrides: &Overrides,
        available_cpus: &[usize],
    ) -> Result<Config, ConfigError> {
        let host = Host {
            cpus: available_cpus,
            ..Host::this_process()
        };
        Self::from_toml_str_on(text, origin, overrides, &host)
    }

    /// The general form of [`Config::from_toml_str`]: with `overrides` applied, validated for
    /// `host` (its CPUs and its open file limit).
    pub fn from_toml_str_on(
        text: &str,
        origin: &str,
        overrides: &Overrides,
        host: &Host<'_>,
    ) -> Result<Config, ConfigError> {
        let src = Source { origin, text };
        let mut raw = parse_raw(&src)?;
        overrides.apply(&mut raw);
        validate::validate(raw, &src, host)
    }

    /// The quick form: one listener on `listen`, one pool of `backends`, `overrides` for the
    /// rest. Validated exactly as a file would be.
    pub fn from_quick(
        listen: &str,
        backends: &[BackendSpec],
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        Self::from_quick_on(listen, backends, overrides, &Host::this_process())
    }

    /// [`Config::from_quick`] with `available_cpus` standing for the affinity mask.
    pub fn from_quick_with(
        listen: &str,
        backends: &[BackendSpec],
        overrides: &Overrides,
        available_cpus: &[usize],
    ) -> Result<Config, ConfigError> {
        let host = Host {
            cpus: available_cpus,
            ..Host::this_process()
        };
        Self::from_quick_on(listen, backends, overrides, &host)
    }

    /// [`Config::from_quick`] validated for `host`.
    pub fn from_quick_on(
        listen: &str,
        backends: &[BackendSpec],
        overrides: &Overrides,
        host: &Host<'_>,
    ) -> Result<Config, ConfigError> {
        let mut raw = quick::quick_raw(listen, backends);
        overrides.apply(&mut raw);
        let src = Source {
            origin: "command line",
            text: "",
        };
        validate::validate(raw, &src, host)
    }

    /// How many workers run, with `auto` resolved against the process's affinity mask.
    pub fn worker_count(&self) -> usize {
        self.worker_cpus().len()
    }

    /// The CPU each worker pins to, one entry per worker, against the process's affinity
    /// mask (read once, see [`affinity::available_cpus`]).
    pub fn worker_cpus(&self) -> Vec<usize> {
        self.worker_cpus_in(affinity::available_cpus())
    }

    /// The CPU each worker pins to, with `available` standing for the affinity mask.
    ///
    /// - `cpus` given: its first `workers` entries (all of them for `auto`).
    /// - otherwise: the mask in ascending order, one worker per CPU for `auto`; a fixed count
    ///   larger than the mask wraps around it, so workers share CPUs.
    ///
    /// Never empty. Validation guarantees `cpus` has at least `workers` entries; a `Config`
    /// built by hand that breaks that gets one worker per listed CPU.
    pub fn worker_cpus_in(&self, available: &[usize]) -> Vec<usize> {
        worker_cpus(self.workers, self.cpus.as_deref(), available)
    }

    /// A readable multi-line summary: engine, workers and their CPUs, timeouts, features,
    /// tuning, listeners, pools and backends with weights.
    pub fn summary(&self) -> String {
        summary::summary(self, affinity::available_cpus())
    }

    /// [`Config::summary`] with `available` standing for the affinity mask.
    pub fn summary_in(&self, available: &[usize]) -> String {
        summary::summary(self, available)
    }
}

/// What validation needs to know about the machine: read from the process by
/// [`Host::this_process`], or given by tests.
#[derive(Clone, Copy, Debug)]
pub struct Host<'a> {
    /// The CPUs of the affinity mask, ascending.
    pub cpus: &'a [usize],
    /// `RLIMIT_NOFILE`, after raising the soft limit to the hard one.
    pub fd_limit: FdLimit,
}

impl Host<'static> {
    /// This process: its affinity mask, and its open file limit raised to the hard limit (once
    /// per process, see [`crate::sys::limits::raised_nofile`]).
    pub fn this_process() -> Self {
        Host {
            cpus: affinity::available_cpus(),
            fd_limit: crate::sys::limits::raised_nofile(),
        }
    }
}

/// The CPU each worker pins to (see [`Config::worker_cpus_in`]).
pub(crate) fn worker_cpus(
    workers: Workers,
    cpus: Option<&[usize]>,
    available: &[usize],
) -> Vec<usize> {
    let base: &[usize] = match cpus {
        Some(list) if !list.is_empty() => list,
        _ if !available.is_empty() => available,
        _ => &[0],
    };
    let count = match workers {
        Workers::Auto => base.len(),
        Workers::Count(n) if cpus.is_some_and(|c| !c.is_empty()) => n.clamp(1, base.len()),
        Workers::Count(n) => n.max(1),
    };
    base.iter().copied().cycle().take(count).collect()
}

/// Parses TOML text into the raw structure, turning serde errors into located ones.
pub fn parse_raw(src: &Source<'_>) -> Result<RawConfig, ConfigError> {
    let deserializer = toml::Deserializer::parse(src.text).map_err(|e| syntax_error(src, &e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = field_path(e.path());
        let inner = e.into_inner();
        let message = plain_types(inner.message().trim());
        let field = if field.is_empty() {
            "(document)".to_owned()
        } else {
            field
        };
        let location = match inner.span() {
            Some(span) => src.locate(span),
            None => Location::Origin(src.origin.to_owned()),
        };
        ConfigError::Invalid {
            location,
            field,
            message,
        }
    })
}

fn syntax_error(src: &Source<'_>, error: &toml::de::Error) -> ConfigError {
    ConfigError::Syntax {
        location: match error.span() {
            Some(span) => src.locate(span),
            None => Location::Origin(src.origin.to_owned()),
        },
        message: format!("invalid TOML: {}", error.message().trim()),
    }
}

/// `pool[0].backend[1].weight`, leaving out the private keys that [`toml::Spanned`] uses.
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if key.starts_with("$__") => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// serde names Rust types ("expected i64"); say what to write instead.
fn plain_types(message: &str) -> String {
    message
        .replace("expected i64", "expected an integer")
        .replace("expected a boolean", "expected true or false")
}
