//! What one check sends and how its answer is judged: pure functions, no I/O (the checker in
//! `checker.rs` does the I/O).

use std::net::SocketAddr;

use crate::config::Check;

/// Longest answer read: an HTTP status line or an expected prefix is far shorter.
pub const MAX_ANSWER: usize = 4096;

/// Where one check stands after what was read so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judged {
    Pass,
    Fail(String),
    /// Not enough yet: read on (until the timeout).
    NeedMore,
}

/// The bytes a check sends once connected to `target` (empty: nothing to send).
pub fn request(check: &Check, target: SocketAddr) -> Vec<u8> {
    match check {
        Check::Tcp => Vec::new(),
        Check::SendExpect { send, .. } => send.clone(),
        Check::Http { path, .. } => format!(
            "GET {path} HTTP/1.0\r\nHost: {target}\r\nUser-Agent: ringlb-health\r\n\
             Connection: close\r\n\r\n"
        )
        .into_bytes(),
    }
}

/// Whether a check is over once connected and its request sent (nothing to read).
pub fn done_when_sent(check: &Check) -> bool {
    match check {
        Check::Tcp => true,
        Check::SendExpect { expect, .. } => expect.is_empty(),
        Check::Http { .. } => false,
    }
}

/// Judge `answer`, the bytes read so far; `eof`: the backend closed after them.
pub fn judge(check: &Check, answer: &[u8], eof: bool) -> Judged {
    match check {
        Check::Tcp => Judged::Pass,
        Check::SendExpect { expect, .. } => judge_prefix(expect, answer, eof),
        Check::Http { expect, .. } => match status_line(answer) {
            Some(Ok(status)) if expect.matches(status) => Judged::Pass,
            Some(Ok(status)) => Judged::Fail(format!("HTTP status {status}")),
            Some(Err(line)) => Judged::Fail(format!("not an HTTP status line: {line:?}")),
            None if eof => Judged::Fail(format!("closed after {} bytes", answer.len())),
            None if answer.len() >= MAX_ANSWER => Judged::Fail("no status line".into()),
            None => Judged::NeedMore,
        },
    }
}

fn judge_prefix(expect: &[u8], answer: &[u8], eof: bool) -> Judged {
    let common = expect.len().min(answer.len());
    if expect[..common] != answer[..common] {
        return Judged::Fail(format!(
            "answered {:?}, expected {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(64)]),
            String::from_utf8_lossy(expect)
        ));
    }
    if answer.len() >= expect.len() {
        Judged::Pass
    } else if eof {
        Judged::Fail(format!("closed after {} bytes", answer.len()))
    } else {
        Judged::NeedMore
    }
}

/// The status of `HTTP/1.x NNN ...` once the first line is complete: `Err(line)` when it is
/// not one.
fn status_line(answer: &[u8]) -> Option<Result<u16, String>> {
    let end = answer.iter().position(|&b| b == b'\n')?;
    let line = String::from_utf8_lossy(&answer[..end]);
    let line = line.trim_end_matches('\r');
    let mut words = line.split(' ');
    let version = words.next().unwrap_or("");
    let status = words.next().and_then(|s| s.parse::<u16>().ok());
    Some(match status {
        Some(status) if version.starts_with("HTTP/1.") && (100..600).contains(&status) => {
            Ok(status)
        }
        _ => Err(line.chars().take(64).collect()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StatusMatch;

    fn http(expect: StatusMatch) -> Check {
        Check::Http {
            path: "/health".into(),
            expect,
        }
    }

    #[test]
    fn http_request_and_status() {
        let target: SocketAddr = "127.0.0.1:80".parse().expect("addr");
        let sent = String::from_utf8(request(&http(StatusMatch::Class(2)), target)).expect("text");
        assert!(
            sent.starts_with("GET /health HTTP/1.0\r\nHost: 127.0.0.1:80\r\n"),
            "{sent}"
        );
        assert!(sent.ends_with("\r\n\r\n"));
        let two = http(StatusMatch::Class(2));
        assert_eq!(
            judge(&two, b"HTTP/1.1 204 No Content\r\n", false),
            Judged::Pass
        );
        assert_eq!(judge(&two, b"HTTP/1.1 20", false), Judged::NeedMore);
        assert_eq!(
            judge(&two, b"HTTP/1.0 503 Busy\r\n", false),
            Judged::Fail("HTTP status 503".into())
        );
        assert!(matches!(
            judge(&two, b"SSH-2.0-x\r\n", false),
            Judged::Fail(_)
        ));
        assert!(matches!(judge(&two, b"HTTP/1.1 2", true), Judged::Fail(_)));
        let exact = http(StatusMatch::Exact(301));
        assert_eq!(judge(&exact, b"HTTP/1.1 301 Moved\n", false), Judged::Pass);
        assert!(matches!(
            judge(&exact, b"HTTP/1.1 302 Found\n", false),
            Judged::Fail(_)
        ));
    }

    #[test]
    fn send_expect_compares_a_prefix_as_it_arrives() {
        let check = Check::SendExpect {
            send: b"PING\r\n".to_vec(),
            expect: b"+PONG".to_vec(),
        };
        assert!(!done_when_sent(&check));
        assert_eq!(judge(&check, b"+PO", false), Judged::NeedMore);
        assert_eq!(judge(&check, b"+PONG\r\n", false), Judged::Pass);
        assert!(
            matches!(judge(&check, b"-ERR", false), Judged::Fail(_)),
            "fails early"
        );
        assert!(matches!(judge(&check, b"+PO", true), Judged::Fail(_)));
        let banner = Check::SendExpect {
            send: Vec::new(),
            expect: Vec::new(),
        };
        assert!(done_when_sent(&banner));
        assert!(done_when_sent(&Check::Tcp));
    }
}
