//! The inspect phase against real peers nobody here wrote: HAProxy sending and reading PROXY
//! headers around ringlb, and openssl TLS clients routed by server name to openssl servers.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use crate::harness::{Ctx, Launch, Outcome, Proxy, Skip, connect_from, free_addr};
use crate::peer::{self, Daemon};

/// One HAProxy with two proxies: `front` (TCP) takes clients and hands them to `ringlb` with
/// `send-proxy-v2`; `back` (HTTP, `accept-proxy`) answers every request with the client
/// address it took from the PROXY header ringlb sent it. Both log each client to stdout (the
/// daemon's output), `front` as `front ADDRESS:PORT` when the connection ends and `back` as
/// `back ADDRESS:PORT` when the request is answered (`%ci:%cp`: from the header for `back`).
///
/// One thread (`nbthread 1`): HAProxy writes a line to stdout only if it takes the log lock
/// within 200 tries and drops it otherwise (`fd_write_frag_line`, "we prefer to fail on
/// collision than to block"), so with a thread per CPU on a loaded machine a line now and then
/// went missing while another thread held the lock, which failed this scenario in CI.
fn haproxy(
    ctx: &Ctx,
    front: SocketAddr,
    ringlb: SocketAddr,
    back: SocketAddr,
) -> Result<Daemon, Skip> {
    let binary = peer::find(&["/usr/sbin/haproxy", "/usr/bin/haproxy"], "haproxy")?;
    let dir = peer::scratch(ctx, "haproxy");
    let conf = format!(
        "global\n  nbthread 1\n  log stdout format raw local0 info\n\
         defaults\n  log global\n\
         \x20 timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         listen front\n  mode tcp\n  bind {front}\n  log-format \"front %ci:%cp %ts %Tt\"\n\
         \x20 server ringlb {ringlb} send-proxy-v2\n\
         frontend back\n  mode http\n  bind {back} accept-proxy\n\
         \x20 log-format \"back %ci:%cp %ts %Tt\"\n\
         \x20 http-request return status 200 content-type text/plain \
         lf-string \"%[src]:%[src_port]\"\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf).expect("haproxy.cfg");
    let mut command = Command::new(binary);
    command.arg("-db").arg("-f").arg(&path);
    Ok(Daemon::start(command, dir, &[front, back]))
}

/// A HAProxy line's side and client (`front 127.0.0.2:40000`), without the termination state
/// and total time that follow (`%ts %Tt`, there to explain a line that comes late).
fn first_two_words(line: &str) -> Option<String> {
    let mut words = line.split_whitespace();
    Some(format!("{} {}", words.next()?, words.next()?))
}

/// The `client` of a line of ringlb's JSON access log.
fn logged_client(line: &str) -> Option<String> {
    let line: serde_json::Value = serde_json::from_str(line).ok()?;
    line["client"].as_str().map(str::to_owned)
}

/// HAProxy sends `send-proxy-v2` to a ringlb listener with `accept_proxy`, which passes the
/// client on with `send_proxy` v1 and v2 to HAProxy's `accept-proxy`: HAProxy's `src` at the
/// far end is the client that connected to HAProxy at the near end. Each hop's log says so
/// too: HAProxy's `front` and `back` lines (`%ci:%cp`) and ringlb's access log name the
/// client, once per connection (clients connect from 127.0.0.2-4, so that no readiness probe
/// from 127.0.0.1 can share a client's address and port).
pub fn haproxy_and_ringlb_pass_the_client_along(ctx: &Ctx) -> Outcome {
    let back = free_addr();
    for version in ["v1", "v2"] {
        let logs = peer::scratch(ctx, &format!("ringlb-access-{version}"));
        let access_log = logs.join("access.log");
        let text = format!(
            "[access_log]\npath = \"{}\"\nformat = \"json\"\n\
             [[listener]]\nbind = \"{{listen}}\"\npool = \"web\"\naccept_proxy = true\n\
             [[pool]]\nname = \"web\"\n\
             [[pool.backend]]\naddress = \"{back}\"\nsend_proxy = \"{version}\"\n",
            access_log.display()
        );
        let proxy = Proxy::start(ctx, &Launch::file(&text))?;
        let front = free_addr();
        let haproxy = haproxy(ctx, front, proxy.addr, back)?;
        let mut clients = Vec::new();
        for host in 2..5 {
            let mut stream = connect_from(front, Ipv4Addr::new(127, 0, 0, host));
            let local = stream.local_addr().expect("local address");
            stream
                .write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
                .expect("request");
            let mut answer = String::new();
            stream
                .read_to_string(&mut answer)
                .expect("HAProxy's answer");
            assert!(
                answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
                "{version}: {answer:?}\n{}",
                haproxy.output()
            );
            let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
            assert_eq!(body, local.to_string(), "{version}: {answer:?}");
            clients.push(local.to_string());
        }
        for side in ["front", "back"] {
            let lines: Vec<String> = clients.iter().map(|c| format!("{side} {c}")).collect();
            peer::expect_log_lines(
                &format!("{version}: HAProxy's {side} log"),
                || haproxy.output(),
                first_two_words,
                &lines,
            );
        }
        peer::expect_log_lines(
            &format!("{version}: ringlb's access log"),
            || std::fs::read_to_string(&access_log).unwrap_or_default(),
            logged_client,
            &clients,
        );
        drop(haproxy);
        proxy.finish();
        let _ = std::fs::remove_dir_all(&logs);
    }
    Ok(())
}

/// A self-signed certificate for `name`, as (certificate, key) paths in `dir`.
fn certificate(openssl: &str, dir: &std::path::Path, name: &str) -> (String, String) {
    let cert = dir.join(format!("{name}.crt")).display().to_string();
    let key = dir.join(format!("{name}.key")).display().to_string();
    let status = Command::new(openssl)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "1", "-subj"])
        .arg(format!("/CN={name}"))
        .args(["-keyout", &key, "-out", &cert])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl req");
    assert!(status.success(), "openssl req for {name}");
    (cert, key)
}

/// An `openssl s_server` with a certificate for `name`.
fn tls_server(ctx: &Ctx, openssl: &'static str, name: &str) -> (SocketAddr, Daemon) {
    let dir = peer::scratch(ctx, &format!("s_server-{name}"));
    let (cert, key) = certificate(openssl, &dir, name);
    let addr = free_addr();
    let mut command = Command::new(openssl);
    command
        .arg("s_server")
        .arg("-accept")
        .arg(addr.to_string())
        .args(["-cert", &cert, "-key", &key, "-quiet"]);
    (addr, Daemon::start(command, dir, &[addr]))
}

/// The subject of the certificate an `openssl s_client` got through `proxy` asking for
/// `name` (none: no server name sent).
fn served_name(openssl: &str, proxy: SocketAddr, name: Option<&str>) -> String {
    let mut command = Command::new(openssl);
    command
        .arg("s_client")
        .arg("-connect")
        .arg(proxy.to_string())
        .arg("-brief");
    match name {
        Some(name) => command.args(["-servername", name]),
        None => command.arg("-noservername"),
    };
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("CONNECTION ESTABLISHED"),
        "{name:?}: no handshake: {text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Peer certificate: "))
        .unwrap_or_else(|| panic!("{name:?}: no peer certificate: {text}"))
        .trim()
        .to_owned()
}

/// Real TLS through SNI routes: `openssl s_client -servername` reaches the `openssl s_server`
/// of its route (exact, then wildcard), and a client with an unknown name or none reaches the
/// listener's own pool; the handshake completing shows the ClientHello and all after it
/// arrived untouched.
pub fn openssl_clients_reach_the_backend_of_their_name(ctx: &Ctx) -> Outcome {
    let openssl = peer::find(&["/usr/bin/openssl"], "openssl")?;
    let (api, _api) = tls_server(ctx, openssl, "api.example.com");
    let (wild, _wild) = tls_server(ctx, openssl, "wild.example.com");
    let (default, _default) = tls_server(ctx, openssl, "default.test");
    let text = format!(
        "[[listener]]\nbind = \"{{listen}}\"\npool = \"default\"\n\
         [[listener.route]]\nsni = \"api.example.com\"\npool = \"api\"\n\
         [[listener.route]]\nsni = \"*.example.com\"\npool = \"wild\"\n\
         [[pool]]\nname = \"default\"\n[[pool.backend]]\naddress = \"{default}\"\n\
         [[pool]]\nname = \"api\"\n[[pool.backend]]\naddress = \"{api}\"\n\
         [[pool]]\nname = \"wild\"\n[[pool.backend]]\naddress = \"{wild}\"\n"
    );
    let proxy = Proxy::start(ctx, &Launch::file(&text))?;
    for (name, expected) in [
        (Some("api.example.com"), "api.example.com"),
        (Some("www.example.com"), "wild.example.com"),
        (Some("example.org"), "default.test"),
        (None, "default.test"),
    ] {
        let subject = served_name(openssl, proxy.addr, name);
        assert_eq!(subject, format!("CN = {expected}"), "{name:?}");
    }
    proxy.finish();
    Ok(())
}

/// dnsmasq answering for a local name on `addr` (UDP and TCP).
fn dnsmasq(ctx: &Ctx, addr: SocketAddr) -> Result<Daemon, Skip> {
    let binary = peer::find(&["/usr/sbin/dnsmasq"], "dnsmasq-base")?;
    let dir = peer::scratch(ctx, "dnsmasq");
    let mut command = Command::new(binary);
    command
        .args(["-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts"])
        .arg(format!("--listen-address={}", addr.ip()))
        .arg("--bind-interfaces")
        .arg(format!("--port={}", addr.port()))
        .args(["--host-record=a.ringlb.test,192.0.2.11"])
        .args(["--host-record=b.ringlb.test,192.0.2.12"])
        .args([
            "--pid-file=",
            "--user=root",
            "--group=root",
            "--log-facility=-",
        ]);
    Ok(Daemon::start(command, dir, &[addr]))
}

/// `dig` asks a real DNS server through ringlb, over UDP (a UDP listener with
/// `udp_responses = 1`, 200 questions in one batch) and over TCP (a TCP listener on the same
/// port): every answer is the server's.
pub fn dig_resolves_through_ringlb(ctx: &Ctx) -> Outcome {
    let dig = peer::find(&["/usr/bin/dig"], "bind9-dnsutils")?;
    let server = free_addr();
    let dns = dnsmasq(ctx, server)?;
    let text = format!(
        "[[listener]]\nbind = \"{{listen}}\"\npool = \"dns\"\n\
         [[listener]]\nname = \"dns-udp\"\nbind = \"{{listen}}\"\nprotocol = \"udp\"\n\
         pool = \"dns\"\n\
         [[pool]]\nname = \"dns\"\nudp_responses = 1\n\
         [[pool.backend]]\naddress = \"{server}\"\n"
    );
    let proxy = Proxy::start(ctx, &Launch::file(&text))?;
    let ask = |extra: &[&str], names: &[&str]| -> Vec<String> {
        let output = Command::new(dig)
            .arg(format!("@{}", proxy.addr.ip()))
            .args(["-p", &proxy.addr.port().to_string()])
            .args(["+short", "+tries=5", "+time=1"])
            .args(extra)
            .args(names)
            .output()
            .expect("run dig");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    // The UDP sockets may be bound a moment after the TCP ones: dig retries.
    assert_eq!(
        ask(&[], &["a.ringlb.test"]),
        ["192.0.2.11"],
        "{}",
        dns.output()
    );
    let names: Vec<&str> = (0..200)
        .map(|i| {
            if i % 2 == 0 {
                "a.ringlb.test"
            } else {
                "b.ringlb.test"
            }
        })
        .collect();
    let answers = ask(&[], &names);
    let expected: Vec<&str> = (0..200)
        .map(|i| {
            if i % 2 == 0 {
                "192.0.2.11"
            } else {
                "192.0.2.12"
            }
        })
        .collect();
    assert_eq!(answers, expected, "200 questions over UDP");
    assert_eq!(
        ask(&["+tcp"], &["b.ringlb.test"]),
        ["192.0.2.12"],
        "over TCP"
    );
    proxy.finish();
    drop(dns);
    Ok(())
}
