//! Configuration errors, each pointing at where the offending value was written.

use std::fmt;
use std::ops::Range;

/// Where a configuration value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A position in a named source (a file path, or the name given to a string).
    Text {
        /// The file path or source name.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, counted in characters.
        column: usize,
    },
    /// A named source, position unknown (for example a missing required section).
    Origin(String),
    /// A command-line flag.
    CommandLine,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Text {
                origin,
                line,
                column,
            } => write!(f, "{origin}:{line}:{column}"),
            Location::Origin(origin) => f.write_str(origin),
            Location::CommandLine => f.write_str("command line"),
        }
    }
}

/// Why a configuration could not be loaded.
///
/// Displayed as `file:line:col: field: what is wrong and what was expected`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read the configuration: {source}")]
    Read {
        /// The path as given.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("{location}: {message}")]
    Syntax {
        /// Where the parser stopped.
        location: Location,
        /// The parser's explanation.
        message: String,
    },
    /// A value is missing, of the wrong type, out of range or inconsistent with another.
    #[error("{location}: {field}: {message}")]
    Invalid {
        /// Where the value was written.
        location: Location,
        /// The field's path, such as `listener[1].pool` (arrays counted from 0).
        field: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

impl ConfigError {
    /// Where the error points, if it points anywhere.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { location, .. } | ConfigError::Invalid { location, .. } => {
                Some(location)
            }
        }
    }
}

/// The text being validated and its name, to turn byte spans into lines and columns.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// File path or a descriptive name such as `<string>`.
    pub origin: &'a str,
    /// The whole text.
    pub text: &'a str,
}

impl Source<'_> {
    /// Turns a byte span into a location: line and column of its start.
    ///
    /// Spans past the end of the text are the command-line marker (see
    /// [`super::raw::CLI_SPAN`]); a span inside a multi-byte character is moved back to the
    /// character's start rather than trusted.
    pub fn locate(&self, span: Range<usize>) -> Location {
        let start = span.start;
        if start > self.text.len() {
            return Location::CommandLine;
        }
        let mut boundary = start;
        while !self.text.is_char_boundary(boundary) {
            boundary -= 1;
        }
        let before = &self.text[..boundary];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location::Text {
            origin: self.origin.to_owned(),
            line,
            column,
        }
    }

    /// An [`ConfigError::Invalid`] at `span`.
    pub fn invalid(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let location = self.locate(span);
        let mut field = field.into();
        if location == Location::CommandLine {
            if let Some(flag) = flag_for(&field) {
                field = format!("{field} ({flag})");
            }
        }
        ConfigError::Invalid {
            location,
            field,
            message: message.into(),
        }
    }

    /// An [`ConfigError::Invalid`] about the source as a whole (no position).
    pub fn invalid_here(
        &self,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            location: Location::Origin(self.origin.to_owned()),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The command-line flag that sets a field, so errors about flag values name the flag.
fn flag_for(field: &str) -> Option<&'static str> {
    // Per-listener and per-pool fields are set for all of them at once by one flag.
    let leaf = field.rsplit('.').next().unwrap_or(field);
    Some(match (field, leaf) {
        ("engine", _) => "--engine",
        ("workers", _) => "--workers",
        _ if field.starts_with("cpus") => "--cpus",
        ("timeouts.connect", _) => "--connect-timeout",
        ("timeouts.idle", _) => "--idle-timeout",
        ("timeouts.shutdown_grace", _) => "--shutdown-grace",
        ("timeouts.client_fin", _) => "--client-fin",
        ("timeouts.server_fin", _) => "--server-fin",
        ("tcp.keepalive_idle", _) => "--keepalive-idle",
        ("tcp.keepalive_interval", _) => "--keepalive-interval",
        ("tcp.keepalive_count", _) => "--keepalive-count",
        ("tcp.client_user_timeout", _) => "--client-user-timeout",
        ("tcp.server_user_timeout", _) => "--server-user-timeout",
        ("tuning.pipe_size", _) => "--pipe-size",
        ("tuning.buffer_size", _) => "--buffer-size",
        ("max_connections", _) => "--max-connections",
        ("tuning.max_connections", _) => "--worker-max-connections",
        ("tuning.max_pipes", _) => "--max-pipes",
        ("tuning.ring_entries", _) => "--ring-entries",
        ("admin.socket", _) => "--admin-socket",
        (_, "bind") => "--listen",
        (_, "mode") => "--mode",
        (_, "algorithm") => "--algorithm",
        (_, "retries") => "--retries",
        (_, "check" | "path") if field.contains(".health.") => "--health-check",
        (_, "interval") if field.contains(".health.") => "--health-interval",
        (_, "rise") if field.contains(".health.") => "--rise",
        (_, "fall") if field.contains(".health.") => "--fall",
        (_, "affinity_ttl") => "--affinity-ttl",
        (_, "queue_size") => "--queue-size",
        (_, "queue_timeout") => "--queue-timeout",
        (_, "admission_rate") => "--admission-rate",
        (_, "admission_burst") => "--admission-burst",
        (_, "inspect_timeout") => "--inspect-timeout",
        (_, "accept_proxy") => "--accept-proxy",
        (_, "protocol") => "--protocol",
        (_, "send_proxy") => "--send-proxy",
        (_, "udp_idle_timeout") => "--udp-idle-timeout",
        (_, "udp_responses") => "--udp-responses",
        (_, "udp_max_flows") => "--udp-max-flows",
        (_, "address" | "weight" | "name" | "max_connections") if field.contains("backend") => {
            "--backend"
        }
        _ => return None,
    })
}
