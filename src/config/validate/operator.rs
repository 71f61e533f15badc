//! Validation of what operators reach a running ringlb with: `[admin]` and `[access_log]`.

use std::net::SocketAddr;

use super::super::raw::*;
use super::super::{AccessLog, Admin, AdminSocket, LogFormat, LogTarget, Source};
use super::Result;

/// `[admin]`: the socket path (`""` off), an optional TCP address, and the token that a TCP
/// address reachable from other hosts must have.
pub(super) fn admin(raw: &RawAdmin, src: &Source<'_>) -> Result<Admin> {
    let socket = match &raw.socket {
        None => Admin::default().socket,
        Some(path) if path.get_ref().is_empty() => AdminSocket::Off,
        Some(path) => {
            let text = path.get_ref();
            if text.trim() != text || text.contains('\0') {
                return Err(src.invalid(
                    path.span(),
                    "admin.socket",
                    format!("bad path {text:?}: no surrounding spaces or NUL characters"),
                ));
            }
            AdminSocket::Given(text.into())
        }
    };
    let token = match &raw.token {
        None => None,
        Some(token) => {
            let text = token.get_ref();
            // It travels in an HTTP header: visible ASCII only, no spaces.
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(src.invalid(
                    token.span(),
                    "admin.token",
                    "must be non-empty visible ASCII without spaces (it is sent as \
                     Authorization: Bearer TOKEN)",
                ));
            }
            Some(text.clone())
        }
    };
    let listen = match &raw.listen {
        None => None,
        Some(text) => {
            let addr: SocketAddr = text.get_ref().trim().parse().map_err(|_| {
                src.invalid(
                    text.span(),
                    "admin.listen",
                    format!(
                        "bad address {:?}: expected IP:port such as \"127.0.0.1:9900\"",
                        text.get_ref()
                    ),
                )
            })?;
            if !addr.ip().is_loopback() && token.is_none() {
                return Err(src.invalid(
                    text.span(),
                    "admin.listen",
                    format!(
                        "{addr} is not a loopback address, so admin.token is required (anyone \
                         who reaches it could drain every backend)"
                    ),
                ));
            }
            Some(addr)
        }
    };
    Ok(Admin {
        socket,
        listen,
        token,
    })
}

/// `[access_log]`: off unless `path` is set (`""` is off too); `"stderr"` is standard error.
pub(super) fn access_log(raw: &RawAccessLog, src: &Source<'_>) -> Result<Option<AccessLog>> {
    let format = match raw.format.as_ref().map(|f| *f.get_ref()) {
        None | Some(LogFormatName::Text) => LogFormat::Text,
        Some(LogFormatName::Json) => LogFormat::Json,
    };
    let path = match &raw.path {
        Some(path) if !path.get_ref().is_empty() => path,
        _ => {
            if let Some(f) = &raw.format {
                return Err(src.invalid(
                    f.span(),
                    "access_log.format",
                    "is set but access_log.path is not: set path (a file or \"stderr\") to \
                     turn the access log on",
                ));
            }
            return Ok(None);
        }
    };
    let text = path.get_ref();
    if text.trim() != text || text.contains('\0') {
        return Err(src.invalid(
            path.span(),
            "access_log.path",
            format!("bad path {text:?}: no surrounding spaces or NUL characters"),
        ));
    }
    let target = if text == "stderr" {
        LogTarget::Stderr
    } else {
        LogTarget::File(text.into())
    };
    Ok(Some(AccessLog { target, format }))
}
