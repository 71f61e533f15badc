//! PROXY protocol v2 toward UDP backends (`send_proxy = "v2"` on a UDP listener's pool), on
//! every engine: each datagram a backend receives starts with a v2 header, transport DGRAM,
//! naming the client and the address it wrote to, and the backend's replies reach the client
//! unchanged. The backend reads the headers with the `ppp` crate, an implementation
//! independent of ringlb's. Where the host has `::1`, an IPv6 listener in front of the same
//! IPv4 backend shows the 52-byte header and the IPv4 limit together.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ppp::v2::{Addresses, Command, Header, Protocol};
use ringlb::control::client::{Endpoint, request};

use crate::harness::{Ctx, Outcome, payload};
use crate::udp::{ask, client, start, warm_up};

/// The largest client datagram that still fits behind a 28-byte IPv4 header toward an IPv4
/// backend: 65,507 - 28.
const LARGEST: usize = 65_479;
/// The same behind a 52-byte IPv6 header, toward the same IPv4 backend: 65,507 - 52.
const LARGEST_FROM_V6: usize = 65_455;

/// What a PROXY-reading backend found ahead of one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Headed {
    source: SocketAddr,
    destination: SocketAddr,
    /// Bytes after the header.
    payload: usize,
}

/// Every datagram the backend received: read, or why not.
#[derive(Debug, Default)]
struct Seen {
    headed: Vec<Headed>,
    bad: Vec<String>,
}

type Record = Arc<Mutex<Seen>>;

/// ppp's reading of the header at the start of `datagram`, which must be v2, PROXY, UDP
/// over IPv4 or IPv6.
fn read_header(datagram: &[u8]) -> Result<(Headed, usize), String> {
    let header = Header::try_from(datagram).map_err(|e| format!("not a v2 header: {e:?}"))?;
    if header.command != Command::Proxy || header.protocol != Protocol::Datagram {
        return Err(format!("{:?} over {:?}", header.command, header.protocol));
    }
    let (source, destination) = match header.addresses {
        Addresses::IPv4(a) => (
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        ),
        Addresses::IPv6(a) => (
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        ),
        other => return Err(format!("addresses {other:?}")),
    };
    let len = header.len();
    let payload = datagram.len() - len;
    Ok((
        Headed {
            source,
            destination,
            payload,
        },
        len,
    ))
}

/// A UDP backend that reads the PROXY header of each datagram and sends back what follows
/// it; a datagram without a valid header is recorded and not answered.
fn proxy_echo() -> (SocketAddr, Record) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP backend");
    let addr = socket.local_addr().expect("address");
    let seen: Record = Arc::default();
    let record = Arc::clone(&seen);
    thread::spawn(move || {
        let mut buffer = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buffer) {
            match read_header(&buffer[..n]) {
                Ok((headed, len)) => {
                    record.lock().expect("seen").headed.push(headed);
                    let _ = socket.send_to(&buffer[len..n], from);
                }
                Err(e) => record
                    .lock()
                    .expect("seen")
                    .bad
                    .push(format!("{n} B from {from}: {e}")),
            }
        }
    });
    (addr, seen)
}

/// Send `data` to `to` until it comes back, at most 5 times, as [`ask`] does for a socket
/// that sends several datagrams: an echo of one of `earlier` (this socket's), late after a
/// retry on a loaded host, is skipped rather than taken for this one's. Adds `data` to
/// `earlier`.
fn exchange(
    socket: &UdpSocket,
    to: SocketAddr,
    data: &[u8],
    earlier: &mut Vec<Vec<u8>>,
) -> Result<(), String> {
    let mut buffer = vec![0u8; 65_536];
    for _ in 0..5 {
        socket.send_to(data, to).map_err(|e| format!("send: {e}"))?;
        loop {
            match socket.recv_from(&mut buffer) {
                Ok((n, from)) if from == to && buffer[..n] == *data => {
                    earlier.push(data.to_vec());
                    return Ok(());
                }
                Ok((n, _)) if earlier.iter().any(|e| buffer[..n] == e[..]) => {}
                Ok((n, from)) => return Err(format!("{n} bytes from {from}, none sent")),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(format!("receive: {e}")),
            }
        }
    }
    Err(format!("no answer to {} bytes after 5 tries", data.len()))
}

/// The headers `seen` from `source`.
fn from(seen: &Record, source: SocketAddr) -> Vec<Headed> {
    let seen = seen.lock().expect("seen");
    seen.headed
        .iter()
        .filter(|h| h.source == source)
        .copied()
        .collect()
}

/// Wait until `/api/show` counts a datagram dropped as too big on UDP listener `index`.
fn wait_for_too_big(endpoint: &Endpoint, index: usize) -> u64 {
    // The control side reads the workers' counters about once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let show = request(endpoint, None, "GET", "/api/show", None).expect("show");
        let show: serde_json::Value = serde_json::from_slice(&show.body).expect("JSON");
        let listener = &show["udp_listeners"][index];
        let dropped = listener["dropped_too_big"].as_u64().unwrap_or(0);
        if dropped > 0 {
            return dropped;
        }
        assert!(
            Instant::now() < deadline,
            "no too_big drop counted: {listener}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// `send_proxy = "v2"`: a v2 DGRAM header ahead of every datagram, naming the client socket
/// and the listener (on a wildcard listener, the address the client wrote to); datagrams of
/// 0 B and of the largest size that fits behind the header come back whole, and one a byte
/// larger is dropped and counted as too big. 200 clients on 127.81.x.y, three datagrams
/// each, coalesced (`UDP_SEGMENT`) datagrams, each behind its own header, and an IPv6
/// client where the host has `::1`.
pub fn udp_send_proxy_v2_heads_every_datagram(ctx: &Ctx) -> Outcome {
    let (backend, seen) = proxy_echo();
    let wildcard_port = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    // A free port on ::1, if the host has it.
    let v6 = UdpSocket::bind("[::1]:0").and_then(|s| s.local_addr()).ok();
    let v6_listener = v6.map_or_else(String::new, |addr| {
        format!(
            "[[listener]]\nname = \"v6\"\nbind = \"{addr}\"\nprotocol = \"udp\"\npool = \"p\"\n"
        )
    });
    let socket_path = crate::control::admin_socket(ctx);
    let text = format!(
        "[admin]\nsocket = \"{}\"\n\
         [[listener]]\nbind = \"{{listen}}\"\npool = \"p\"\n\
         [[listener]]\nname = \"udp\"\nbind = \"{{listen}}\"\nprotocol = \"udp\"\npool = \"p\"\n\
         [[listener]]\nname = \"any\"\nbind = \"0.0.0.0:{wildcard_port}\"\nprotocol = \"udp\"\n\
         pool = \"p\"\n{v6_listener}\
         [[pool]]\nname = \"p\"\nsend_proxy = \"v2\"\nudp_max_flows = 1024\n[[pool.backend]]\naddress = \"{backend}\"\n",
        socket_path.display()
    );
    let proxy = start(ctx, &text)?;
    let endpoint = Endpoint::Unix(socket_path.clone());
    warm_up(&proxy);

    // Sizes, from one client: each comes back whole, its header named the client.
    let socket = client("127.0.0.1:0");
    let me = socket.local_addr().expect("address");
    let mut earlier = Vec::new();
    for (i, size) in [0usize, 1, 1472, 9000, LARGEST].into_iter().enumerate() {
        let data = payload(size, i as u64);
        exchange(&socket, proxy.addr, &data, &mut earlier)
            .unwrap_or_else(|e| panic!("{size} B: {e}"));
        let expected = Headed {
            source: me,
            destination: proxy.addr,
            payload: size,
        };
        assert!(
            from(&seen, me).contains(&expected),
            "{size} B: {:?}",
            from(&seen, me)
        );
    }
    // One byte more does not fit behind the header: dropped, never cut.
    socket
        .send_to(&payload(LARGEST + 1, 9), proxy.addr)
        .expect("send");
    let mut buffer = vec![0u8; 65_536];
    while let Ok((n, _)) = socket.recv_from(&mut buffer) {
        let late = earlier.iter().any(|e| buffer[..n] == e[..]);
        assert!(late, "an answer of {n} B to a datagram too big to forward");
    }
    assert!(wait_for_too_big(&endpoint, 0) >= 1);
    exchange(&socket, proxy.addr, b"after", &mut earlier).expect("the flow goes on");
    assert!(from(&seen, me).iter().all(|h| h.payload <= LARGEST));

    // Clients from many addresses, three datagrams each: every one headed, to its client.
    const THREADS: u32 = 4;
    const CLIENTS: u32 = 200;
    let target = proxy.addr;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                let mut clients = Vec::new();
                for n in (t..CLIENTS).step_by(THREADS as usize) {
                    let socket = client(&format!("127.81.{}.{}:0", n / 250, n % 250 + 1));
                    let mut earlier = Vec::new();
                    for round in 0..3u64 {
                        let data = payload(10 + n as usize, u64::from(n) * 3 + round);
                        exchange(&socket, target, &data, &mut earlier)
                            .unwrap_or_else(|e| panic!("client {n}, datagram {round}: {e}"));
                    }
                    clients.push((socket.local_addr().expect("address"), 10 + n as usize));
                }
                clients
            })
        })
        .collect();
    for (source, size) in workers
        .into_iter()
        .flat_map(|w| w.join().expect("client thread"))
    {
        let headed = from(&seen, source);
        assert!(headed.len() >= 3, "{source}: {headed:?}");
        for h in headed {
            assert_eq!((h.destination, h.payload), (target, size), "{source}");
        }
    }

    // Coalesced datagrams: one by one to the backend, each behind its header.
    coalesced(&seen, proxy.addr);

    // A wildcard listener: the destination is the address the client wrote to.
    for (n, to) in ["127.0.0.9", "127.45.6.7"].into_iter().enumerate() {
        let to = SocketAddr::from((to.parse::<Ipv4Addr>().expect("literal"), wildcard_port));
        let socket = client(&format!("127.82.0.{}:0", n + 1));
        let source = socket.local_addr().expect("address");
        ask(&socket, to, &payload(100, n as u64), 20).unwrap_or_else(|e| panic!("{to}: {e}"));
        let headed = from(&seen, source);
        assert!(!headed.is_empty(), "{source}");
        for h in headed {
            assert_eq!((h.destination, h.payload), (to, 100), "{source}");
        }
    }

    // IPv6: a 52-byte header, and the IPv4 backend's limit.
    if let Some(v6) = v6 {
        let socket = client("[::1]:0");
        let me = socket.local_addr().expect("address");
        let mut earlier = Vec::new();
        for size in [0, LARGEST_FROM_V6] {
            let data = payload(size, 7);
            exchange(&socket, v6, &data, &mut earlier)
                .unwrap_or_else(|e| panic!("IPv6, {size} B: {e}"));
        }
        let headed = from(&seen, me);
        assert!(headed.iter().all(|h| h.destination == v6), "{headed:?}");
        assert!(headed.iter().any(|h| h.payload == LARGEST_FROM_V6));
        socket
            .send_to(&payload(LARGEST_FROM_V6 + 1, 9), v6)
            .expect("send");
        while let Ok((n, _)) = socket.recv_from(&mut buffer) {
            let late = earlier.iter().any(|e| buffer[..n] == e[..]);
            assert!(late, "an answer of {n} B to a datagram too big to forward");
        }
        wait_for_too_big(&endpoint, 2);
    }

    let bad = std::mem::take(&mut seen.lock().expect("seen").bad);
    assert!(bad.is_empty(), "datagrams without a valid header: {bad:?}");
    proxy.finish();
    let _ = std::fs::remove_file(&socket_path);
    Ok(())
}

/// 5 × (10 datagrams of 1,200 B and one of 345) sent with `UDP_SEGMENT` to `to`: the backend
/// gets each alone behind a header naming this client, and the echoes come back apart.
fn coalesced(seen: &Record, to: SocketAddr) {
    use ringlb::sys::mmsg::{Outgoing, SendBatch};
    use std::os::fd::AsFd;
    let socket = client("127.0.0.1:0");
    let me = socket.local_addr().expect("address");
    exchange(&socket, to, b"hello", &mut Vec::new()).expect("the flow answers");
    // The echoes are not asked again: wait for them as long as a loaded host may need.
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut batch = SendBatch::default();
    let mut buffer = vec![0u8; 65_536];
    for round in 0..5u64 {
        let data = payload(10 * 1200 + 345, round);
        let message = Outgoing {
            to: Some(to),
            from: None,
            segment: Some(1200),
            bytes: &data,
        };
        assert_eq!(batch.send(socket.as_fd(), [message]).expect("GSO send"), 1);
        for (i, expected) in data.chunks(1200).enumerate() {
            // A late echo of a retried "hello" is not one of these.
            let n = loop {
                let n = socket
                    .recv(&mut buffer)
                    .unwrap_or_else(|e| panic!("round {round}, echo {i}: {e}"));
                if buffer[..n] != *b"hello" {
                    break n;
                }
            };
            assert_eq!(&buffer[..n], expected, "round {round}, echo {i}");
        }
    }
    let sizes: Vec<usize> = from(seen, me)
        .iter()
        .map(|h| h.payload)
        .filter(|&n| n != b"hello".len())
        .collect();
    let mut expected = Vec::new();
    for _ in 0..5 {
        expected.extend(std::iter::repeat_n(1200, 10));
        expected.push(345);
    }
    assert_eq!(
        sizes, expected,
        "what the backend received, datagram by datagram"
    );
    assert!(from(seen, me).iter().all(|h| h.destination == to));
}
