//! The inspect phase: what a listener reads from a client before it picks a backend.
//!
//! A listener with `accept_proxy` first reads the client's PROXY protocol header (strictly,
//! see [`crate::core::proxy_header`]); a listener with SNI routes then reads the TLS
//! ClientHello (see [`hello`]) and picks the pool by the server name. Both happen in one
//! bounded buffer, [`INSPECT_MAX`] bytes, within the listener's `inspect_timeout`.
//!
//! An [`Inspection`] is fed the bytes as they come and says what to do: read more, go on
//! (with the client address the header gave, and the pool the name chose), or refuse. What
//! was read after the PROXY header is the client's data: it is sent to the backend first,
//! untouched (the ClientHello included). The PROXY header itself is never forwarded.

use std::net::SocketAddr;
use std::time::Duration;

use crate::core::proxy_header::{self, Parsed};

pub mod hello;
pub mod routes;

pub use routes::Routes;

/// The most bytes read before a backend is picked: a ClientHello in one record of the
/// largest size TLS allows, behind a PROXY header, fits. A PROXY header or ClientHello that
/// does not fit is refused (`accept_proxy`) or falls back (`sni_fallback`).
pub const INSPECT_MAX: usize = hello::RECORD_MAX + 5 + 4096;

/// The first read's share of the buffer: most headers and ClientHellos fit, so most
/// inspecting connections never hold more.
const FIRST_READ: usize = 2048;

/// What a listener reads before picking a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectPolicy {
    /// Read a PROXY protocol header first; a client without a valid one is closed.
    pub accept_proxy: bool,
    /// How long the client may take.
    pub timeout: Duration,
    /// SNI routes, when the listener has some.
    pub sni: Option<SniPolicy>,
}

/// A listener's SNI routing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SniPolicy {
    /// Server names to route targets.
    pub routes: Routes,
    /// What happens to a client whose server name cannot be read.
    pub fallback: SniFallback,
}

/// What happens to a client whose server name cannot be read (`sni_fallback`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SniFallback {
    /// To the listener's own pool, with what it sent.
    #[default]
    Default,
    /// Closed.
    Close,
}

/// Why an inspection refused a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The PROXY header was invalid, too long, or the client ended without one.
    ProxyHeader,
    /// Nothing usable came within `inspect_timeout`.
    Timeout,
    /// No server name could be read and `sni_fallback = "close"`.
    NoServerName,
}

/// What to do after the bytes so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Read more.
    More,
    /// Pick a backend: in the route target `route` (`None`: the listener's own pool).
    Proceed { route: Option<usize> },
    /// Close the client.
    Refuse(Refusal),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Reading the PROXY header.
    Header,
    /// Reading the ClientHello, which starts at `data`.
    Hello,
    /// Decided; later bytes (of a read that was in flight) are the client's data.
    Done,
}

/// One connection's inspection.
#[derive(Debug)]
pub struct Inspection {
    buf: Vec<u8>,
    stage: Stage,
    /// Where the client's data starts (after the PROXY header).
    data: usize,
    /// The client and destination addresses the PROXY header gave.
    addresses: Option<(SocketAddr, SocketAddr)>,
}

impl Inspection {
    /// A new client's inspection under `policy`.
    pub fn new(policy: &InspectPolicy) -> Self {
        let stage = if policy.accept_proxy {
            Stage::Header
        } else if policy.sni.is_some() {
            Stage::Hello
        } else {
            Stage::Done
        };
        Inspection {
            buf: Vec::new(),
            stage,
            data: 0,
            addresses: None,
        }
    }

    /// How many bytes the next read may bring (0: the buffer is full).
    pub fn room(&self) -> usize {
        let room = INSPECT_MAX - self.buf.len();
        if self.buf.is_empty() {
            room.min(FIRST_READ)
        } else {
            room
        }
    }

    /// Take the bytes of one read (at most [`Self::room`]; more are cut, which the engine
    /// never asks for) and say what to do.
    pub fn feed(&mut self, policy: &InspectPolicy, bytes: &[u8]) -> Verdict {
        let take = bytes.len().min(INSPECT_MAX - self.buf.len());
        self.buf.extend_from_slice(&bytes[..take]);
        self.decide(policy)
    }

    fn decide(&mut self, policy: &InspectPolicy) -> Verdict {
        let full = self.buf.len() >= INSPECT_MAX;
        if self.stage == Stage::Header {
            match proxy_header::parse(&self.buf) {
                Ok(Parsed::Complete(header)) => {
                    self.data = header.len;
                    self.addresses = header.addresses;
                    self.stage = Stage::Hello;
                }
                Ok(Parsed::Incomplete { .. }) if !full => return Verdict::More,
                Ok(Parsed::Incomplete { .. }) | Err(_) => {
                    return Verdict::Refuse(Refusal::ProxyHeader);
                }
            }
        }
        if self.stage != Stage::Hello {
            return Verdict::Proceed { route: None };
        }
        let Some(sni) = &policy.sni else {
            self.stage = Stage::Done;
            return Verdict::Proceed { route: None };
        };
        match hello::read(&self.buf[self.data..]) {
            hello::Hello::Incomplete if !full => Verdict::More,
            hello::Hello::Name(name) => {
                self.stage = Stage::Done;
                Verdict::Proceed {
                    route: sni.routes.route(&name),
                }
            }
            hello::Hello::Incomplete | hello::Hello::NoName | hello::Hello::NotHello => {
                self.fall_back(sni.fallback)
            }
        }
    }

    fn fall_back(&mut self, fallback: SniFallback) -> Verdict {
        self.stage = Stage::Done;
        match fallback {
            SniFallback::Default => Verdict::Proceed { route: None },
            SniFallback::Close => Verdict::Refuse(Refusal::NoServerName),
        }
    }

    /// The client ended its side (or `inspect_timeout` passed, `timed_out`) before the bytes
    /// decided: without its PROXY header it is refused; without a whole ClientHello it falls
    /// back.
    pub fn cut_short(&mut self, policy: &InspectPolicy, timed_out: bool) -> Verdict {
        match (self.stage, &policy.sni) {
            (Stage::Header, _) if timed_out => Verdict::Refuse(Refusal::Timeout),
            (Stage::Header, _) => Verdict::Refuse(Refusal::ProxyHeader),
            (Stage::Hello, Some(sni)) => match sni.fallback {
                SniFallback::Close if timed_out => {
                    self.stage = Stage::Done;
                    Verdict::Refuse(Refusal::Timeout)
                }
                fallback => self.fall_back(fallback),
            },
            (Stage::Hello | Stage::Done, _) => {
                self.stage = Stage::Done;
                Verdict::Proceed { route: None }
            }
        }
    }

    /// The client and destination addresses from the PROXY header, if it gave them.
    pub fn addresses(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.addresses
    }

    /// The client's data read so far, everything after the PROXY header: it goes to the
    /// backend first.
    pub fn data(&self) -> &[u8] {
        self.buf.get(self.data..).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
