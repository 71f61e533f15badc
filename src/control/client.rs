//! The admin API's client, for `ringlb ctl`: one HTTP/1.1 request over the Unix socket or TCP,
//! the response parsed with `httparse`.

use std::io::{self, Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// How long to wait for an answer (reads wait up to a second for the workers).
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response read.
const MAX_RESPONSE: u64 = 64 << 20;

/// Where the admin API is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket path.
    Unix(PathBuf),
    /// `host:port` of a TCP address (from an `http://host:port` URL).
    Tcp(String),
}

impl Endpoint {
    /// `http://HOST:PORT` (a trailing `/` is allowed; no path, no https).
    pub fn from_url(url: &str) -> Result<Endpoint, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("bad URL {url:?}: expected http://HOST:PORT (https is not supported)")
        })?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
            return Err(format!("bad URL {url:?}: expected http://HOST:PORT"));
        }
        Ok(Endpoint::Tcp(authority.to_owned()))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp(authority) => write!(f, "http://{authority}"),
        }
    }
}

/// An HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error` of a JSON error body, else the body as text, else the status.
    pub fn reason(&self) -> String {
        let from_json = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
        match from_json {
            Some(reason) => reason,
            None if !self.body.is_empty() => self.text().trim().to_owned(),
            None => format!("HTTP status {}", self.status),
        }
    }
}

/// Send one request and read the whole answer.
pub fn request(
    endpoint: &Endpoint,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Answer, String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: ringlb\r\nConnection: close\r\nAccept: */*\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    let raw = exchange(endpoint, head.as_bytes())
        .map_err(|e| format!("cannot reach the admin API at {endpoint}: {e}"))?;
    parse(&raw).map_err(|e| format!("bad answer from {endpoint}: {e}"))
}

fn exchange(endpoint: &Endpoint, request: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match endpoint {
        Endpoint::Unix(path) => {
            let mut stream = UnixStream::connect(path)?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.set_write_timeout(Some(TIMEOUT))?;
            stream.write_all(request)?;
            stream.take(MAX_RESPONSE).read_to_end(&mut out)?;
        }
        Endpoint::Tcp(authority) => {
            let mut stream = TcpStream::connect(authority.as_str())?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.set_write_timeout(Some(TIMEOUT))?;
            stream.write_all(request)?;
            stream.take(MAX_RESPONSE).read_to_end(&mut out)?;
        }
    }
    Ok(out)
}

/// Status and body of a complete response (`Connection: close`, so it ends at EOF; the body
/// is cut at `Content-Length` when there is one).
fn parse(raw: &[u8]) -> Result<Answer, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let header_len = match response.parse(raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err("the connection closed mid-answer".into()),
        Err(e) => return Err(e.to_string()),
    };
    let status = response.code.ok_or("no status code")?;
    let mut length = None;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("Transfer-Encoding") {
            return Err("chunked answers are not expected".into());
        }
        if header.name.eq_ignore_ascii_case("Content-Length") {
            let text = std::str::from_utf8(header.value).map_err(|e| e.to_string())?;
            length = Some(text.trim().parse::<usize>().map_err(|e| e.to_string())?);
        }
    }
    let rest = &raw[header_len..];
    let body = match length {
        Some(n) if n > rest.len() => return Err("the connection closed mid-body".into()),
        Some(n) => rest[..n].to_vec(),
        None => rest.to_vec(),
    };
    Ok(Answer { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Endpoint::from_url("http://127.0.0.1:9900/"),
            Ok(Endpoint::Tcp("127.0.0.1:9900".into()))
        );
        assert!(Endpoint::from_url("https://127.0.0.1:9900").is_err());
        assert!(Endpoint::from_url("http://127.0.0.1:9900/api").is_err());
        assert!(Endpoint::from_url("http://host").is_err());
    }

    #[test]
    fn answers_are_parsed_by_content_length() {
        let raw =
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 17\r\n\r\n{\"error\":\"nope\"}\nextra";
        let answer = parse(raw).expect("parses");
        assert_eq!(answer.status, 404);
        assert_eq!(answer.reason(), "nope");
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-").is_err());
    }
}
