//! The server name a TLS client asks for, read from its ClientHello without terminating TLS
//! (nginx's `ssl_preread`, HAProxy's `req.ssl_sni`).
//!
//! The ClientHello is one handshake message carried by one or more handshake records. The
//! records are framed here (a 5-byte header each, at most 2^14 bytes of payload, RFC 8446
//! 5.1), their payloads joined when the message spans several, and the message itself is
//! parsed by `tls-parser`. Nothing is decided before the whole message is in: a name is read
//! only from a ClientHello that parses completely.

use tls_parser::{
    SNIType, TlsExtension, TlsMessage, TlsMessageHandshake, parse_tls_client_hello_extensions,
    parse_tls_message_handshake,
};

/// Content type of handshake records.
const HANDSHAKE: u8 = 22;
/// Handshake type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// The record header: type, version, length.
const RECORD_HEADER: usize = 5;
/// The most a plaintext record may carry (RFC 8446 5.1: MUST NOT exceed 2^14).
pub const RECORD_MAX: usize = 1 << 14;
/// The handshake message header: type and 24-bit length.
const MESSAGE_HEADER: usize = 4;

/// What the bytes so far say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello so far, not complete yet.
    Incomplete,
    /// A complete ClientHello asking for this server name (lower case, without a final dot).
    Name(String),
    /// A complete ClientHello without a (usable) server name.
    NoName,
    /// Not a ClientHello: another protocol, or TLS that breaks its framing.
    NotHello,
}

/// Read the ClientHello at the start of `bytes`.
pub fn read(bytes: &[u8]) -> Hello {
    let mut message: Vec<u8> = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = bytes.get(at..at + RECORD_HEADER) else {
            return prefix_check(&bytes[at..]);
        };
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if header[0] != HANDSHAKE || header[1] != 3 || len == 0 || len > RECORD_MAX {
            return Hello::NotHello;
        }
        let Some(payload) = bytes.get(at + RECORD_HEADER..at + RECORD_HEADER + len) else {
            return Hello::Incomplete;
        };
        at += RECORD_HEADER + len;
        // Most ClientHellos fit one record: parse it in place.
        let whole = if message.is_empty() && complete(payload).is_some() {
            payload
        } else {
            message.extend_from_slice(payload);
            &message
        };
        if whole[0] != CLIENT_HELLO {
            return Hello::NotHello;
        }
        if let Some(end) = complete(whole) {
            return client_hello(&whole[..end]);
        }
    }
}

/// The handshake message's length with its header, if `message` holds all of it.
fn complete(message: &[u8]) -> Option<usize> {
    let header = message.get(..MESSAGE_HEADER)?;
    let len = usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
    (message.len() >= MESSAGE_HEADER + len).then_some(MESSAGE_HEADER + len)
}

/// A partial record header: can it still be a handshake record?
fn prefix_check(partial: &[u8]) -> Hello {
    match partial {
        [] | [HANDSHAKE] | [HANDSHAKE, 3, ..] => Hello::Incomplete,
        _ => Hello::NotHello,
    }
}

/// The server name of a complete ClientHello message.
fn client_hello(message: &[u8]) -> Hello {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)))) =
        parse_tls_message_handshake(message)
    else {
        return Hello::NotHello;
    };
    let Some(ext) = hello.ext else {
        return Hello::NoName;
    };
    let Ok((_, extensions)) = parse_tls_client_hello_extensions(ext) else {
        return Hello::NotHello;
    };
    let names = extensions.iter().find_map(|e| match e {
        TlsExtension::SNI(names) => Some(names),
        _ => None,
    });
    names
        .into_iter()
        .flatten()
        .find(|(kind, _)| *kind == SNIType::HostName)
        .and_then(|(_, name)| normalize(name))
        .map_or(Hello::NoName, Hello::Name)
}

/// A host name as routes are written: ASCII, lower case, no final dot. `None` for a name that
/// cannot be one (empty, not printable ASCII, longer than 253 bytes).
pub fn normalize(name: &[u8]) -> Option<String> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > 253 || !name.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    Some(String::from_utf8_lossy(name).to_ascii_lowercase())
}

#[cfg(test)]
mod tests;

/// Builders of ClientHellos for tests elsewhere in the core.
#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) use super::tests::{client_hello, records};
}
