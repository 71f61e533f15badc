//! High availability, proven in network namespaces: two ringlb processes agree on every
//! client's backend (Maglev), keepalived moves a virtual address between two nodes
//! (active-standby, VRRP), and a router learns the address from BIRD on both nodes
//! (active-active, ECMP over BGP), with plain and resilient next-hop groups.
//!
//! Every test builds its own namespaces (`rlb<pid>x<n>-*`, see [`net::Lab`]) and removes
//! them, and every process it started, when it ends, passed or failed. Without root, `ip
//! netns`, keepalived or BIRD a test prints `SKIP <test>: <reason>` and passes. The tests
//! take turns (one lab at a time: their timings need the CPU), and print the figures the
//! README quotes: `cargo test --release --test ha -- --nocapture`.

#[path = "ha/bgp.rs"]
mod bgp;
#[path = "ha/keepalived.rs"]
mod keepalived;
#[path = "ha/net.rs"]
mod net;
#[path = "ha/traffic.rs"]
mod traffic;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use net::Lab;

/// One lab at a time.
static TURN: Mutex<()> = Mutex::new(());

/// Not a test: this binary, started with [`traffic::BACKEND_ENV`] inside a backend's
/// namespace, is that backend.
#[test]
fn backend_process() {
    traffic::serve_if_asked();
}

/// The ringlb binary under test.
pub fn ringlb() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ringlb"))
}

/// This test binary, which serves as a backend (see [`backend_process`]).
fn this_binary() -> PathBuf {
    std::env::current_exe().expect("test binary")
}

/// Client addresses: `base.first` .. `base.(first + count - 1)`.
pub fn clients(base: [u8; 3], first: u8, count: u8) -> Vec<IpAddr> {
    (first..first + count)
        .map(|i| IpAddr::V4(Ipv4Addr::new(base[0], base[1], base[2], i)))
        .collect()
}

/// Starts backend `name` in namespace `ns`, listening on `addr`.
pub fn start_backend(lab: &mut Lab, ns: &str, name: &str, addr: SocketAddr) {
    let spec = format!("{name} {addr}");
    lab.spawn_env(
        ns,
        name,
        &this_binary(),
        &[
            "--exact",
            "backend_process",
            "--nocapture",
            "--test-threads",
            "1",
        ],
        &[(traffic::BACKEND_ENV, spec.as_str())],
    );
}

/// A ringlb node's configuration: one TCP listener on `vip` (freebind: the address may not
/// be here yet), Maglev over `backends`, health checks every 100 ms, its own admin socket.
pub fn node_config(
    lab: &Lab,
    node: &str,
    vip: SocketAddr,
    backends: &[(&str, SocketAddr)],
) -> PathBuf {
    let socket = admin_socket(lab, node);
    let mut text = format!(
        "engine = \"epoll\"\nworkers = 1\n\n[admin]\nsocket = \"{}\"\n\n\
         [[listener]]\nname = \"vip\"\nbind = \"{vip}\"\npool = \"web\"\nfreebind = true\n\n\
         [[pool]]\nname = \"web\"\nalgorithm = \"source-hash\"\n",
        socket.display()
    );
    for (name, addr) in backends {
        text.push_str(&format!(
            "\n[[pool.backend]]\nname = \"{name}\"\naddress = \"{addr}\"\n"
        ));
    }
    text.push_str(
        "\n[pool.health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 2\n",
    );
    lab.write(&format!("{node}.toml"), &text)
}

pub fn admin_socket(lab: &Lab, node: &str) -> PathBuf {
    lab.dir.join(format!("{node}.sock"))
}

/// Starts ringlb as `node` in namespace `node` and waits until `ringlb ctl health` passes.
pub fn start_node(lab: &mut Lab, node: &str) {
    let config = lab.dir.join(format!("{node}.toml"));
    let config = config.to_str().expect("utf-8 path").to_owned();
    lab.spawn(node, node, ringlb(), &["run", "--config", &config]);
    let socket = admin_socket(lab, node);
    let start = std::time::Instant::now();
    loop {
        let (ok, out) = health(lab, node, &socket);
        if ok {
            return;
        }
        if start.elapsed() > Duration::from_secs(10) || !lab.running(node) {
            panic!("{node} not healthy: {out}\n{}", lab.log_tail(node));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ringlb ctl --socket SOCKET health` in namespace `ns`.
pub fn health(lab: &Lab, ns: &str, socket: &Path) -> (bool, String) {
    let socket = socket.to_str().expect("utf-8 path");
    lab.exec(
        ns,
        ringlb().to_str().expect("utf-8 path"),
        &["ctl", "--socket", socket, "health"],
    )
}

/// The layer-2 lab of the Maglev and keepalived tests: a bridge (in namespace `sw`) joining
/// a client (10.77.0.100 and clients .101-.164), nodes n1 (.1) and n2 (.2) and backends
/// b1-b3 (.11-.13, port 8080) on 10.77.0.0/24.
#[derive(Debug)]
pub struct L2 {
    pub lab: Lab,
    pub backends: Vec<(&'static str, SocketAddr)>,
    pub clients: Vec<IpAddr>,
}

pub const VIP: &str = "10.77.0.50:80";

impl L2 {
    pub fn build(tag: &str) -> L2 {
        let mut lab = Lab::new(tag);
        lab.add_ns("sw");
        lab.ip("sw", "link add br0 type bridge");
        lab.ip("sw", "link set br0 up");
        let hosts = [
            ("client", "10.77.0.100"),
            ("n1", "10.77.0.1"),
            ("n2", "10.77.0.2"),
            ("b1", "10.77.0.11"),
            ("b2", "10.77.0.12"),
            ("b3", "10.77.0.13"),
        ];
        for (i, (ns, addr)) in hosts.iter().enumerate() {
            lab.add_ns(ns);
            lab.veth("sw", &format!("p{i}"), ns, "eth0");
            lab.ip("sw", &format!("link set p{i} master br0"));
            lab.ip(ns, &format!("addr add {addr}/24 dev eth0"));
        }
        let clients = clients([10, 77, 0], 101, 64);
        let batch: String = clients
            .iter()
            .map(|c| format!("addr add {c}/24 dev eth0\n"))
            .collect();
        lab.ip_batch("client", &batch);
        let backends = vec![
            ("b1", "10.77.0.11:8080".parse().expect("literal")),
            ("b2", "10.77.0.12:8080".parse().expect("literal")),
            ("b3", "10.77.0.13:8080".parse().expect("literal")),
        ];
        for (name, addr) in &backends {
            start_backend(&mut lab, name, name, *addr);
        }
        L2 {
            lab,
            backends,
            clients,
        }
    }

    /// Writes both nodes' configurations (listener on [`VIP`]) and starts them.
    pub fn start_nodes(&mut self) {
        let vip: SocketAddr = VIP.parse().expect("literal");
        for node in ["n1", "n2"] {
            node_config(&self.lab, node, vip, &self.backends);
            start_node(&mut self.lab, node);
        }
    }
}

/// Two ringlb processes with the same backends, on two nodes, send each client address to
/// the same backend (Maglev is deterministic: no shared state, no seed). Each of 64 clients
/// connects to both nodes' own addresses (the VIP is on neither: the listeners bind it with
/// freebind, and the test reaches them through a per-node address instead).
#[test]
fn maglev_agrees_across_two_processes() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reason) = net::unavailable(&["ip"]) {
        return net::skip("maglev_agrees_across_two_processes", &reason);
    }
    let mut l2 = L2::build("maglev");
    let backends = l2.backends.clone();
    for (node, addr) in [("n1", "10.77.0.1:80"), ("n2", "10.77.0.2:80")] {
        node_config(&l2.lab, node, addr.parse().expect("literal"), &backends);
        start_node(&mut l2.lab, node);
    }
    let clients = l2.clients.clone();
    let seen = traffic::in_ns(l2.lab.ns_file("client"), move || {
        let mut seen = BTreeMap::new();
        for client in clients {
            for node in ["10.77.0.1:80", "10.77.0.2:80"] {
                let (_, answer) = traffic::connect(
                    client,
                    node.parse().expect("literal"),
                    Duration::from_secs(1),
                )
                .unwrap_or_else(|e| panic!("{client} -> {node}: {e}"));
                seen.entry(client)
                    .or_insert_with(Vec::new)
                    .push(answer.backend);
            }
        }
        seen
    });
    let agree = seen.values().filter(|b| b[0] == b[1]).count();
    let mut per_backend = BTreeMap::new();
    for b in seen.values() {
        *per_backend.entry(b[0].clone()).or_insert(0) += 1;
    }
    println!(
        "maglev across processes: {agree}/{} clients on the same backend from both nodes; \
         spread {per_backend:?}",
        seen.len()
    );
    assert_eq!(agree, seen.len(), "{seen:?}");
    assert!(
        per_backend.len() == 3,
        "every backend used: {per_backend:?}"
    );
}

/// Active-standby with keepalived, preempting: SIGKILL of the master's ringlb, its return,
/// its backends lost, and the node cut off; see [`keepalived::scenario`].
#[test]
fn keepalived_moves_the_vip_to_the_healthy_node() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reason) = net::unavailable(&["ip", "keepalived"]) {
        return net::skip("keepalived_moves_the_vip_to_the_healthy_node", &reason);
    }
    keepalived::scenario(false);
}

/// The same with `nopreempt`: the node that comes back stays backup.
#[test]
fn keepalived_nopreempt_keeps_the_new_master() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reason) = net::unavailable(&["ip", "keepalived"]) {
        return net::skip("keepalived_nopreempt_keeps_the_new_master", &reason);
    }
    keepalived::scenario(true);
}

/// Active-active behind ECMP, the routes from BIRD: see [`bgp::bird_scenario`].
#[test]
fn bgp_ecmp_spreads_and_withdraws_an_unhealthy_node() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reason) = net::unavailable(&["ip", "bird", "birdc"]) {
        return net::skip("bgp_ecmp_spreads_and_withdraws_an_unhealthy_node", &reason);
    }
    bgp::bird_scenario();
}

/// A plain (hash-threshold) next-hop group moves established flows when a node returns.
#[test]
fn hash_threshold_ecmp_moves_flows_when_a_node_returns() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reason) = net::unavailable(&["ip"]) {
        return net::skip(
            "hash_threshold_ecmp_moves_flows_when_a_node_returns",
            &reason,
        );
    }
    bgp::nexthop_scenario(bgp::Group::HashThreshold);
}

/// A resilient next-hop group moves none.
#[test]
fn resilient_nexthops_keep_flows_when_a_node_returns() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reason) = net::unavailable(&["ip"]) {
        return net::skip("resilient_nexthops_keep_flows_when_a_node_returns", &reason);
    }
    bgp::nexthop_scenario(bgp::Group::Resilient);
}

/// `freebind = true` lets ringlb listen on an address no interface has yet, and connections
/// arrive once the address does; without it ringlb refuses to start, naming the listener.
#[test]
fn freebind_listens_before_the_address_arrives() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reason) = net::unavailable(&["ip"]) {
        return net::skip("freebind_listens_before_the_address_arrives", &reason);
    }
    let mut lab = Lab::new("freebind");
    lab.add_ns("n1");
    let backend: SocketAddr = "127.0.0.1:8080".parse().expect("literal");
    start_backend(&mut lab, "n1", "b1", backend);
    let vip: SocketAddr = "10.255.255.1:80".parse().expect("literal");
    let config = node_config(&lab, "n1", vip, &[("b1", backend)]);
    let text = std::fs::read_to_string(&config).expect("config");
    lab.write(
        "n1.toml",
        &text.replace("freebind = true", "freebind = false"),
    );
    let config = config.to_str().expect("utf-8 path");
    // Bounded, should it start after all.
    let (ok, out) = lab.exec(
        "n1",
        "timeout",
        &[
            "10",
            ringlb().to_str().expect("utf-8 path"),
            "run",
            "--config",
            config,
        ],
    );
    println!(
        "freebind = false, address absent: ringlb exits: {}",
        out.lines().last().unwrap_or("")
    );
    assert!(
        !ok,
        "ringlb cannot listen on an absent address without freebind: {out}"
    );
    assert!(out.contains("10.255.255.1:80"), "{out}");
    lab.write("n1.toml", &text);
    start_node(&mut lab, "n1");
    lab.ip("n1", "addr add 10.255.255.1/32 dev lo");
    let answer = traffic::in_ns(lab.ns_file("n1"), move || {
        traffic::connect(
            "127.0.0.1".parse().expect("literal"),
            vip,
            Duration::from_secs(1),
        )
        .map(|(_, a)| a.backend)
    });
    assert_eq!(answer.expect("served once the address is here"), "b1");
}

/// Active-active through BIRD with a resilient next-hop group following BGP: see
/// [`bgp::bird_resilient_scenario`].
#[test]
fn bgp_with_resilient_nexthops_keeps_flows_when_a_node_returns() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reason) = net::unavailable(&["ip", "bird", "birdc"]) {
        return net::skip(
            "bgp_with_resilient_nexthops_keeps_flows_when_a_node_returns",
            &reason,
        );
    }
    bgp::bird_resilient_scenario();
}
