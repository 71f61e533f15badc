use std::time::Duration;

use super::hello::tests_support::{client_hello, records};
use super::*;

fn policy(accept_proxy: bool, fallback: Option<SniFallback>) -> InspectPolicy {
    InspectPolicy {
        accept_proxy,
        timeout: Duration::from_secs(5),
        sni: fallback.map(|fallback| SniPolicy {
            routes: Routes::new([("api.example.com", 0), ("*.example.com", 1)]),
            fallback,
        }),
    }
}

fn hello_for(name: &str) -> Vec<u8> {
    records(&client_hello(Some(name), 0), hello::RECORD_MAX)
}

#[test]
fn a_proxy_header_gives_the_client_and_is_not_forwarded() {
    let p = policy(true, None);
    let mut inspection = Inspection::new(&p);
    assert_eq!(
        inspection.feed(&p, b"PROXY TCP4 192.0.2.1 198.51.100.2 5"),
        Verdict::More
    );
    let verdict = inspection.feed(&p, b"6324 443\r\nGET / HTTP/1.0\r\n");
    assert_eq!(verdict, Verdict::Proceed { route: None });
    let (client, destination) = inspection.addresses().expect("addresses");
    assert_eq!(client, "192.0.2.1:56324".parse().expect("addr"));
    assert_eq!(destination, "198.51.100.2:443".parse().expect("addr"));
    assert_eq!(inspection.data(), b"GET / HTTP/1.0\r\n");
}

#[test]
fn a_bad_missing_or_late_header_is_refused() {
    let p = policy(true, None);
    let mut bad = Inspection::new(&p);
    assert_eq!(
        bad.feed(&p, b"GET / HTTP/1.0\r\n"),
        Verdict::Refuse(Refusal::ProxyHeader)
    );
    let mut lone_lf = Inspection::new(&p);
    assert_eq!(
        lone_lf.feed(&p, b"PROXY UNKNOWN\n"),
        Verdict::Refuse(Refusal::ProxyHeader)
    );
    let mut short = Inspection::new(&p);
    assert_eq!(short.feed(&p, b"PROXY TCP4"), Verdict::More);
    assert_eq!(
        short.cut_short(&p, false),
        Verdict::Refuse(Refusal::ProxyHeader)
    );
    let mut slow = Inspection::new(&p);
    assert_eq!(slow.cut_short(&p, true), Verdict::Refuse(Refusal::Timeout));
}

#[test]
fn the_server_name_picks_the_route_and_the_hello_is_forwarded_whole() {
    let p = policy(false, Some(SniFallback::Default));
    for (name, route) in [
        ("api.example.com", Some(0)),
        ("www.example.com", Some(1)),
        ("example.org", None),
    ] {
        let bytes = hello_for(name);
        let mut inspection = Inspection::new(&p);
        let mut verdict = Verdict::More;
        for chunk in bytes.chunks(100) {
            assert_eq!(verdict, Verdict::More);
            verdict = inspection.feed(&p, chunk);
        }
        assert_eq!(verdict, Verdict::Proceed { route }, "{name}");
        assert_eq!(inspection.data(), &bytes[..]);
    }
}

#[test]
fn proxy_header_then_hello() {
    let p = policy(true, Some(SniFallback::Close));
    let mut bytes = b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 443\r\n".to_vec();
    let hello = hello_for("api.example.com");
    bytes.extend_from_slice(&hello);
    let mut inspection = Inspection::new(&p);
    assert_eq!(
        inspection.feed(&p, &bytes),
        Verdict::Proceed { route: Some(0) }
    );
    assert_eq!(inspection.data(), &hello[..]);
    assert!(inspection.addresses().is_some());
}

#[test]
fn without_a_usable_hello_the_fallback_decides() {
    for (fallback, expected) in [
        (SniFallback::Default, Verdict::Proceed { route: None }),
        (SniFallback::Close, Verdict::Refuse(Refusal::NoServerName)),
    ] {
        let p = policy(false, Some(fallback));
        let mut plain = Inspection::new(&p);
        assert_eq!(plain.feed(&p, b"SSH-2.0-OpenSSH\r\n"), expected);
        assert_eq!(plain.data(), b"SSH-2.0-OpenSSH\r\n");
        let mut nameless = Inspection::new(&p);
        let bytes = records(&client_hello(None, 0), hello::RECORD_MAX);
        assert_eq!(nameless.feed(&p, &bytes), expected);
        let mut partial = Inspection::new(&p);
        assert_eq!(
            partial.feed(&p, &hello_for("a.example.com")[..40]),
            Verdict::More
        );
        assert_eq!(partial.cut_short(&p, false), expected, "client ended");
    }
    let p = policy(false, Some(SniFallback::Close));
    let mut silent = Inspection::new(&p);
    assert_eq!(
        silent.cut_short(&p, true),
        Verdict::Refuse(Refusal::Timeout)
    );
}

#[test]
fn the_buffer_is_bounded_and_a_hello_too_big_falls_back() {
    let p = policy(false, Some(SniFallback::Default));
    let mut inspection = Inspection::new(&p);
    assert_eq!(inspection.room(), 2048, "the first read is small");
    let big = records(&client_hello(Some("api.example.com"), 30_000), 4000);
    let mut verdict = Verdict::More;
    let mut fed = 0;
    while verdict == Verdict::More {
        let n = inspection.room().min(big.len() - fed);
        assert!(n > 0, "room until it decides");
        verdict = inspection.feed(&p, &big[fed..fed + n]);
        fed += n;
    }
    assert_eq!(verdict, Verdict::Proceed { route: None });
    assert_eq!(fed, INSPECT_MAX);
    assert_eq!(inspection.room(), 0);
    assert_eq!(inspection.data(), &big[..INSPECT_MAX]);
}
