use super::*;

/// A ClientHello handshake message asking for `name` (none: no SNI extension), with `pad`
/// bytes of padding extension to make it as long as a test needs.
pub(crate) fn client_hello(name: Option<&str>, pad: usize) -> Vec<u8> {
    let mut ext = Vec::new();
    if let Some(name) = name {
        let n = name.len() as u16;
        ext.extend_from_slice(&[0, 0]); // server_name
        ext.extend_from_slice(&(n + 5).to_be_bytes());
        ext.extend_from_slice(&(n + 3).to_be_bytes());
        ext.push(0); // host_name
        ext.extend_from_slice(&n.to_be_bytes());
        ext.extend_from_slice(name.as_bytes());
    }
    if pad > 0 {
        ext.extend_from_slice(&[0, 21]); // padding
        ext.extend_from_slice(&(pad as u16).to_be_bytes());
        ext.extend(std::iter::repeat_n(0, pad));
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let len = body.len() as u32;
    let mut message = vec![CLIENT_HELLO];
    message.extend_from_slice(&len.to_be_bytes()[1..]);
    message.extend_from_slice(&body);
    message
}

/// `message` in handshake records of at most `chunk` payload bytes each.
pub(crate) fn records(message: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in message.chunks(chunk) {
        out.extend_from_slice(&[HANDSHAKE, 3, 1]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

#[test]
fn the_name_is_read_from_one_record() {
    let bytes = records(&client_hello(Some("API.Example.com."), 0), RECORD_MAX);
    assert_eq!(read(&bytes), Hello::Name("api.example.com".into()));
}

#[test]
fn every_prefix_is_incomplete_and_the_whole_is_read() {
    let bytes = records(&client_hello(Some("a.example.com"), 300), RECORD_MAX);
    for end in 0..bytes.len() {
        assert_eq!(read(&bytes[..end]), Hello::Incomplete, "prefix of {end}");
    }
    assert_eq!(read(&bytes), Hello::Name("a.example.com".into()));
}

#[test]
fn a_hello_split_over_records_is_joined() {
    let message = client_hello(Some("split.example.com"), 20_000);
    for chunk in [1, 7, 512, RECORD_MAX] {
        let bytes = records(&message, chunk);
        assert_eq!(
            read(&bytes),
            Hello::Name("split.example.com".into()),
            "records of {chunk}"
        );
        assert_eq!(read(&bytes[..bytes.len() - 1]), Hello::Incomplete);
    }
}

#[test]
fn bytes_after_the_hello_do_not_matter() {
    let mut bytes = records(&client_hello(Some("x.example.com"), 0), RECORD_MAX);
    bytes.extend_from_slice(b"\x17\x03\x03\x00\x05hello");
    assert_eq!(read(&bytes), Hello::Name("x.example.com".into()));
}

#[test]
fn a_hello_without_a_name_and_other_protocols_are_told_apart() {
    let bytes = records(&client_hello(None, 0), RECORD_MAX);
    assert_eq!(read(&bytes), Hello::NoName);
    assert_eq!(read(b"GET / HTTP/1.1\r\n\r\n"), Hello::NotHello);
    assert_eq!(read(b"\x16\x02"), Hello::NotHello, "SSLv2-like version");
    assert_eq!(
        read(b"\x16\x03\x01\x00\x00"),
        Hello::NotHello,
        "empty record"
    );
    assert_eq!(
        read(b"\x16\x03\x01\x40\x01"),
        Hello::NotHello,
        "record over 2^14"
    );
    let server_hello = records(&[2, 0, 0, 1, 0], RECORD_MAX);
    assert_eq!(read(&server_hello), Hello::NotHello);
    let mut broken = client_hello(Some("a.example.com"), 0);
    broken.truncate(broken.len() - 3);
    let len = (broken.len() - 4) as u32;
    broken[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
    let read_broken = read(&records(&broken, RECORD_MAX));
    assert!(
        matches!(read_broken, Hello::NotHello | Hello::NoName),
        "a broken extension block yields no name: {read_broken:?}"
    );
}

#[test]
fn names_are_normalized_or_refused() {
    assert_eq!(
        normalize(b"WWW.Example.COM."),
        Some("www.example.com".into())
    );
    assert_eq!(normalize(b""), None);
    assert_eq!(normalize(b"."), None);
    assert_eq!(normalize(b"a b"), None);
    assert_eq!(normalize("é.com".as_bytes()), None);
    assert_eq!(normalize(&[b'a'; 254]), None);
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        let _ = read(&bytes);
    }

    #[test]
    fn mutated_hellos_never_panic(flips in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 1..8)) {
        let mut bytes = records(&client_hello(Some("m.example.com"), 100), 150);
        for (at, value) in flips {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        let _ = read(&bytes);
    }
}
