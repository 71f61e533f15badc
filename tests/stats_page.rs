//! The live stats page (`GET /` on the admin API) against the real binary: served as
//! self-contained HTML without the token, and rendered by headless Chromium into one row per
//! backend with its state and counters. The Chromium test skips (saying so on stderr) when no
//! `chromium` is on PATH; CI installs it.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ringlb::control::client::{Endpoint, request};

#[path = "support/mod.rs"]
mod support;

use support::{TempDir, echo_backend, free_port};

/// Client connections of the load, and the longest it may run.
const LOAD_CONNECTIONS: usize = 60;
const LOAD_TIME: Duration = Duration::from_secs(10);
/// Longest Chromium may take to dump the page.
const BROWSER_TIME: Duration = Duration::from_secs(90);

/// A running ringlb with pool `p` of backends `a` and `b` and the admin API on loopback TCP,
/// killed when dropped.
struct Ringlb {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    stderr: PathBuf,
}

impl Ringlb {
    fn start(dir: &TempDir, token: Option<&str>) -> Ringlb {
        let (listen, admin) = (free_port(), free_port());
        let token = token.map_or_else(String::new, |t| format!("token = \"{t}\"\n"));
        let config = dir.join("ringlb.toml");
        std::fs::write(
            &config,
            format!(
                "[admin]\nsocket = \"\"\nlisten = \"{admin}\"\n{token}\
                 [[listener]]\nbind = \"{listen}\"\npool = \"p\"\n\
                 [[listener]]\nname = \"udp\"\nbind = \"{listen}\"\nprotocol = \"udp\"\n\
                 pool = \"p\"\n\
                 [[pool]]\nname = \"p\"\nalgorithm = \"round-robin\"\n\
                 [[pool.backend]]\naddress = \"{}\"\nname = \"a\"\n\
                 [[pool.backend]]\naddress = \"{}\"\nname = \"b\"\n",
                echo_backend(),
                echo_backend()
            ),
        )
        .expect("config");
        let stderr = dir.join("stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_ringlb"))
            .args(["run", "--config"])
            .arg(&config)
            .args([
                "--engine",
                "epoll",
                "--workers",
                "2",
                "--shutdown-grace",
                "0s",
            ])
            .env_remove("RINGLB_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn ringlb");
        let mut ringlb = Ringlb {
            child,
            listen,
            admin,
            stderr,
        };
        let started = Instant::now();
        while TcpStream::connect(listen).is_err() || TcpStream::connect(admin).is_err() {
            if let Some(status) = ringlb.child.try_wait().expect("wait") {
                panic!("ringlb exited with {status}: {}", ringlb.stderr());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "ringlb did not listen: {}",
                ringlb.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
        ringlb
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn api(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let endpoint = Endpoint::Tcp(self.admin.to_string());
        let answer = request(&endpoint, token, method, path, body).expect("admin API answers");
        let value = serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null);
        (answer.status, value)
    }
}

impl Drop for Ringlb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw `GET path` over TCP: status, headers (names lower-cased), body.
fn get(addr: SocketAddr, path: &str) -> (u16, HashMap<String, String>, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the admin API");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = response.parse(&raw) else {
        panic!("incomplete answer: {}", String::from_utf8_lossy(&raw));
    };
    let fields = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let body = String::from_utf8(raw[len..].to_vec()).expect("UTF-8 body");
    (response.code.unwrap_or(0), fields, body)
}

/// The only absolute URL the page may hold: the SVG namespace, a name rather than a resource.
const SVG_NAMESPACE: &str = "http://www.w3.org/2000/svg";

/// Every way a page could load something from elsewhere, absent once the SVG namespace is
/// taken out.
fn external_references(page: &str) -> Vec<&'static str> {
    let page = page.replace(SVG_NAMESPACE, "").to_ascii_lowercase();
    [
        "http://",
        "https://",
        "src=\"//",
        "href=\"//",
        "<link",
        "<iframe",
        "@import",
        "url(",
        " src=",
    ]
    .into_iter()
    .filter(|needle| page.contains(needle))
    .collect()
}

#[test]
fn the_page_is_served_self_contained_and_without_the_token() {
    let dir = TempDir::new("plain");
    let lb = Ringlb::start(&dir, Some("t0ken"));
    for path in ["/", "/index.html"] {
        let (status, headers, page) = get(lb.admin, path);
        assert_eq!(status, 200, "{path}: {page}");
        assert_eq!(
            headers.get("content-type").map(String::as_str),
            Some("text/html; charset=utf-8")
        );
        let policy = headers
            .get("content-security-policy")
            .expect("a content security policy");
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert!(page.contains("fetch(\"/api/show\""), "it polls the view");
        assert_eq!(external_references(&page), Vec::<&str>::new(), "{path}");
    }
    // The check itself catches a reference.
    assert_eq!(
        external_references("<script src=\"https://cdn.example/x.js\"></script>"),
        vec!["https://", " src="]
    );
    // The data stays behind the token.
    assert_eq!(lb.api(None, "GET", "/api/show", None).0, 401);
    let (status, show) = lb.api(Some("t0ken"), "GET", "/api/show", None);
    assert_eq!(status, 200, "{show}");
    assert_eq!(lb.api(None, "POST", "/", None).0, 401, "only GET is open");
}

/// `LOAD_CONNECTIONS` clients through ringlb, one after another, each exchanging 1 KiB with
/// an echo backend; stops early after `LOAD_TIME`. Returns the exchanges completed.
fn load(listen: SocketAddr) -> usize {
    let started = Instant::now();
    let payload: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    let mut done = 0;
    for _ in 0..LOAD_CONNECTIONS {
        if started.elapsed() > LOAD_TIME {
            break;
        }
        let mut client = TcpStream::connect(listen).expect("connect through ringlb");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        client.write_all(&payload).expect("send");
        let mut echo = vec![0u8; payload.len()];
        client.read_exact(&mut echo).expect("echo");
        assert_eq!(echo, payload);
        done += 1;
    }
    done
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// `chromium --headless --dump-dom URL`: the DOM once the page has run for 5 s of virtual time.
fn dump_dom(browser: &Path, url: &str, dir: &TempDir) -> String {
    let (out, err) = (dir.join("dom.html"), dir.join("chromium.stderr"));
    let mut child = Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(["--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("start chromium");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if started.elapsed() > BROWSER_TIME {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium ran over {BROWSER_TIME:?}: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    let dom = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        status.success() && !dom.is_empty(),
        "chromium exited with {status}: {}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    dom
}

/// The attributes of the start tag at the beginning of `tag` (`<tr a="1" b="2">…`).
fn attributes(tag: &str) -> HashMap<String, String> {
    let end = tag.find('>').unwrap_or(tag.len());
    let mut rest = &tag[..end];
    let mut found = HashMap::new();
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].rsplit(' ').next().unwrap_or_default().to_owned();
        let after = &rest[eq + 2..];
        let close = after.find('"').unwrap_or(after.len());
        found.insert(name, after[..close].to_owned());
        rest = &after[(close + 1).min(after.len())..];
    }
    found
}

/// A backend row of the dump: its attributes and its cells' text by `data-field`.
#[derive(Debug)]
struct Row {
    attributes: HashMap<String, String>,
    fields: HashMap<String, String>,
}

fn backend_rows(dom: &str) -> Vec<Row> {
    rows_with(dom, "data-backend")
}

/// The rows of the dump that have the attribute `key`.
fn rows_with(dom: &str, key: &str) -> Vec<Row> {
    dom.split("<tr ")
        .skip(1)
        .filter_map(|piece| {
            let own = attributes(piece);
            own.get(key)?;
            let row = &piece[..piece.find("</tr>").unwrap_or(piece.len())];
            let fields = row
                .split("<td ")
                .skip(1)
                .filter_map(|cell| {
                    let field = attributes(cell).remove("data-field")?;
                    let text = cell.split_once('>')?.1;
                    let text = &text[..text.find('<').unwrap_or(text.len())];
                    Some((field, text.to_owned()))
                })
                .collect();
            Some(Row {
                attributes: own,
                fields,
            })
        })
        .collect()
}

#[test]
fn chromium_renders_every_backend_with_its_state_and_sessions() {
    let Some(browser) = chromium() else {
        eprintln!("skipping: chromium not found on PATH (neither chromium nor chromium-browser)");
        return;
    };
    let dir = TempDir::new("chromium");
    let lb = Ringlb::start(&dir, None);
    let exchanged = load(lb.listen);
    assert!(exchanged > 0, "no exchange completed");
    // Three datagrams to the UDP listener (its backends do not speak UDP: they are dropped,
    // counted, which is what the page shows).
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP client");
    for _ in 0..3 {
        udp.send_to(b"ping", lb.listen).expect("send");
    }
    let body = serde_json::json!({"pool": "p", "backend": "b", "state": "drain"});
    let (status, answer) = lb.api(None, "POST", "/api/backends/state", Some(&body));
    assert_eq!(status, 200, "{answer}");
    let (_, show) = lb.api(None, "GET", "/api/show", None);
    let total: u64 = show["pools"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .filter_map(|b| b["connections"].as_u64())
        .sum();
    assert!(total >= exchanged as u64, "{show}");

    let dom = dump_dom(&browser, &format!("http://{}/", lb.admin), &dir);
    let page = attributes(&dom[dom.find("<body").expect("a body")..]);
    assert_eq!(
        page.get("data-status").map(String::as_str),
        Some("ok"),
        "the page read /api/show: {dom}"
    );
    let polls: u32 = page
        .get("data-polls")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    assert!(polls >= 2, "it polls again ({polls} polls)");

    let rows = backend_rows(&dom);
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.attributes.get("data-backend").map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in {rows:?}\n{dom}"))
    };
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (name, state) in [("p/a", "ready"), ("p/b", "drain")] {
        let r = row(name);
        assert_eq!(
            r.attributes.get("data-state").map(String::as_str),
            Some(state),
            "{name}: {r:?}"
        );
        assert_eq!(r.fields.get("state").map(String::as_str), Some(state));
        assert_eq!(
            r.attributes.get("class").map(String::as_str),
            Some(state),
            "coloured"
        );
        for field in [
            "weight",
            "active",
            "connections",
            "rate",
            "bytes_in",
            "bytes_out",
        ] {
            assert!(r.fields.contains_key(field), "{name} lacks {field}: {r:?}");
        }
    }
    assert_eq!(
        row("p/b").fields["weight"],
        "1 / 0",
        "drained: no effective weight"
    );
    let sessions: Vec<u64> = rows
        .iter()
        .map(|r| r.fields["connections"].parse().expect("a count"))
        .collect();
    assert!(sessions.iter().any(|&n| n > 0), "{sessions:?}");
    assert!(
        sessions.iter().sum::<u64>() >= exchanged as u64,
        "{sessions:?}"
    );
    assert!(dom.contains("<svg class=\"spark\""), "sparklines drawn");
    assert_eq!(
        dom.matches("data-listener=").count(),
        1,
        "one row per listener"
    );
    assert!(
        dom.contains(&lb.listen.to_string()),
        "the listener's bind address"
    );
    assert_eq!(dom.matches("data-worker=").count(), 2, "one row per worker");
    let udp_rows = rows_with(&dom, "data-udp-listener");
    assert_eq!(udp_rows.len(), 1, "one row per UDP listener: {udp_rows:?}");
    let from_clients: u64 = udp_rows[0].fields["from_clients"].parse().expect("a count");
    assert!(from_clients >= 3, "{udp_rows:?}");
    assert!(udp_rows[0].fields.contains_key("dropped"), "{udp_rows:?}");
}
