//! The HTTP backend's request framing: just enough HTTP/1.1 to serve keep-alive requests.

/// Largest request head accepted; a client sending more without `\r\n\r\n` gets a 400.
const MAX_HEAD: usize = 64 * 1024;

/// What a request head says about framing and the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestHead {
    /// Body bytes that follow the head and must be skipped.
    pub(crate) content_length: u64,
    /// Whether the connection stays open after the response.
    pub(crate) keep_alive: bool,
}

/// Why a request was rejected (answered with 400, then the connection closes).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum HttpError {
    /// The request line is not `METHOD TARGET HTTP/x.y`.
    #[error("malformed request line")]
    RequestLine,
    /// `Content-Length` is not a number.
    #[error("bad Content-Length")]
    ContentLength,
    /// Chunked bodies are not supported by this tiny server.
    #[error("Transfer-Encoding is not supported")]
    TransferEncoding,
}

/// Parses a request head (without the final `\r\n\r\n`).
pub(crate) fn parse_request_head(head: &[u8]) -> Result<RequestHead, HttpError> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().ok_or(HttpError::RequestLine)?;
    let mut parts = request_line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let (_method, _target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) if parts.next().is_none() => (m, t, v),
        _ => return Err(HttpError::RequestLine),
    };
    // HTTP/1.1 defaults to keep-alive, HTTP/1.0 to close.
    let mut keep_alive = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => return Err(HttpError::RequestLine),
    };
    let mut content_length = 0;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(HttpError::ContentLength)?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(HttpError::TransferEncoding);
        } else if name.eq_ignore_ascii_case(b"connection") {
            if value.eq_ignore_ascii_case(b"close") {
                keep_alive = false;
            } else if value.eq_ignore_ascii_case(b"keep-alive") {
                keep_alive = true;
            }
        }
    }
    Ok(RequestHead {
        content_length,
        keep_alive,
    })
}

/// The three canned responses, built once per backend.
#[derive(Debug)]
pub(crate) struct Responses {
    keep_alive: Vec<u8>,
    close: Vec<u8>,
    bad_request: Vec<u8>,
}

impl Responses {
    /// Responses with a `body_size`-byte body and, if named, an `X-Backend` header.
    pub(crate) fn new(body_size: usize, name: Option<&str>) -> Self {
        let tag = name
            .map(|n| format!("X-Backend: {n}\r\n"))
            .unwrap_or_default();
        let body = vec![b'x'; body_size];
        let build = |conn: &str| {
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {body_size}\r\n\
                 {tag}Connection: {conn}\r\n\r\n"
            )
            .into_bytes();
            r.extend_from_slice(&body);
            r
        };
        Self {
            keep_alive: build("keep-alive"),
            close: build("close"),
            bad_request:
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
        }
    }
}

/// Per-connection request framing state.
#[derive(Debug, Default)]
pub(crate) struct HttpConn {
    inbuf: Vec<u8>,
    /// Where to resume searching for `\r\n\r\n`, so partial heads are not rescanned.
    scan_from: usize,
    body_remaining: u64,
}

/// What feeding bytes produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Fed {
    /// Requests answered.
    pub(crate) requests: u64,
    /// The connection must close once `out` is flushed.
    pub(crate) close: bool,
}

impl HttpConn {
    /// Consumes `data`, appending one response per complete request to `out`.
    pub(crate) fn feed(&mut self, data: &[u8], responses: &Responses, out: &mut Vec<u8>) -> Fed {
        self.inbuf.extend_from_slice(data);
        let mut fed = Fed::default();
        let mut pos = 0;
        loop {
            if self.body_remaining > 0 {
                let avail = (self.inbuf.len() - pos) as u64;
                let skip = avail.min(self.body_remaining);
                pos += usize::try_from(skip).unwrap_or(0);
                self.body_remaining -= skip;
                if self.body_remaining > 0 {
                    break;
                }
            }
            let from = self.scan_from.max(pos);
            let Some(end) = find_head_end(&self.inbuf[from..]).map(|i| from + i) else {
                // Resume three bytes back: the terminator may straddle two reads.
                self.scan_from = self.inbuf.len().saturating_sub(3).max(pos);
                if self.inbuf.len() - pos > MAX_HEAD {
                    out.extend_from_slice(&responses.bad_request);
                    fed.close = true;
                }
                break;
            };
            let head = &self.inbuf[pos..end];
            pos = end + 4;
            self.scan_from = pos;
            if head.is_empty() {
                // A stray blank line between requests; tolerated as RFC 9112 asks.
                continue;
            }
            match parse_request_head(head) {
                Ok(h) => {
                    fed.requests += 1;
                    if h.keep_alive {
                        out.extend_from_slice(&responses.keep_alive);
                        self.body_remaining = h.content_length;
                    } else {
                        out.extend_from_slice(&responses.close);
                        fed.close = true;
                        break;
                    }
                }
                Err(_) => {
                    out.extend_from_slice(&responses.bad_request);
                    fed.close = true;
                    break;
                }
            }
        }
        self.inbuf.drain(..pos.min(self.inbuf.len()));
        self.scan_from = self.scan_from.saturating_sub(pos);
        fed
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let h = parse_request_head(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5").unwrap();
        assert_eq!(h.content_length, 5);
        assert!(h.keep_alive);
        let h = parse_request_head(b"GET / HTTP/1.0").unwrap();
        assert!(!h.keep_alive);
        let h = parse_request_head(b"GET / HTTP/1.1\r\nconnection: Close").unwrap();
        assert!(!h.keep_alive);
        assert!(parse_request_head(b"GARBAGE").is_err());
        assert!(parse_request_head(b"GET / HTTP/1.1\r\nContent-Length: x").is_err());
        assert!(parse_request_head(b"").is_err());
    }

    #[test]
    fn pipelined_split_and_bodies() {
        let r = Responses::new(3, None);
        let mut c = HttpConn::default();
        let mut out = Vec::new();
        let req = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcdGET / HTTP/1.1\r\n\r\n";
        // Feed one byte at a time: the framing must not depend on read boundaries.
        let mut total = 0;
        for b in req.iter() {
            let f = c.feed(std::slice::from_ref(b), &r, &mut out);
            assert!(!f.close);
            total += f.requests;
        }
        assert_eq!(total, 2);
        assert_eq!(out, [r.keep_alive.clone(), r.keep_alive.clone()].concat());
    }

    #[test]
    fn oversized_head_is_rejected() {
        let r = Responses::new(0, None);
        let mut c = HttpConn::default();
        let mut out = Vec::new();
        let f = c.feed(&vec![b'a'; MAX_HEAD + 10], &r, &mut out);
        assert!(f.close);
        assert_eq!(out, r.bad_request);
    }
}
