//! Active-active: a router learns the VIP from BIRD on both nodes over BGP and spreads
//! connections over them (ECMP, hashing on L4); and the same router with next-hop groups the
//! test manages, plain (hash-threshold) and resilient.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use super::net::{Lab, wait_for};
use super::traffic::{self, Attempt, Held, Load, failure_window};
use super::{admin_socket, clients, node_config, ringlb, start_backend, start_node};

pub const VIP: &str = "10.78.100.1:80";

/// The routed lab: a client namespace (10.78.1.100, clients .101-.164) behind a router (`r`:
/// 10.78.1.254 and 10.78.0.254) on a bridge with nodes n1 (10.78.0.1) and n2 (.2) and
/// backends b1-b3 (.11-.13). The nodes hold the VIP on their loopback; the router forwards
/// to it by ECMP, hashing on addresses and ports.
#[derive(Debug)]
pub struct L3 {
    pub lab: Lab,
    pub clients: Vec<IpAddr>,
}

impl L3 {
    /// Connections held open by the first 32 client addresses through the VIP, a line every
    /// 50 ms, for at most a minute.
    fn held(&self) -> Held {
        let vip: SocketAddr = VIP.parse().expect("literal");
        Held::start(
            self.lab.ns_file("client"),
            self.clients[..32].to_vec(),
            vip,
            Duration::from_millis(50),
            Duration::from_secs(60),
        )
    }

    /// A new connection every 10 ms from the other client addresses, for at most a minute.
    fn load(&self) -> Load {
        let vip: SocketAddr = VIP.parse().expect("literal");
        Load::start(
            self.lab.ns_file("client"),
            self.clients[32..].to_vec(),
            vip,
            Duration::from_millis(10),
            Duration::from_secs(60),
        )
    }

    /// With `nodes` ringlb nodes, n1 (10.78.0.1) to nN.
    pub fn build(tag: &str, nodes: usize) -> L3 {
        let mut lab = Lab::new(tag);
        lab.add_ns("sw");
        lab.ip("sw", "link add br0 type bridge");
        lab.ip("sw", "link set br0 up");
        let mut hosts = vec![
            ("r".to_owned(), "10.78.0.254".to_owned()),
            ("b1".to_owned(), "10.78.0.11".to_owned()),
            ("b2".to_owned(), "10.78.0.12".to_owned()),
            ("b3".to_owned(), "10.78.0.13".to_owned()),
        ];
        for n in 1..=nodes {
            hosts.push((format!("n{n}"), format!("10.78.0.{n}")));
        }
        for (i, (ns, addr)) in hosts.iter().enumerate() {
            lab.add_ns(ns);
            lab.veth("sw", &format!("p{i}"), ns, "eth0");
            lab.ip("sw", &format!("link set p{i} master br0"));
            lab.ip(ns, &format!("addr add {addr}/24 dev eth0"));
        }
        lab.add_ns("client");
        lab.veth("r", "eth1", "client", "eth0");
        lab.ip("r", "addr add 10.78.1.254/24 dev eth1");
        lab.ip("client", "addr add 10.78.1.100/24 dev eth0");
        let clients = clients([10, 78, 1], 101, 64);
        let batch: String = clients
            .iter()
            .map(|c| format!("addr add {c}/24 dev eth0\n"))
            .collect();
        lab.ip_batch("client", &batch);
        lab.ip("client", "route add default via 10.78.1.254");
        lab.sysctl("r", "net.ipv4.ip_forward=1");
        lab.sysctl("r", "net.ipv4.fib_multipath_hash_policy=1");
        for n in 1..=nodes {
            let node = format!("n{n}");
            lab.ip(&node, "addr add 10.78.100.1/32 dev lo");
            lab.ip(&node, "route add 10.78.1.0/24 via 10.78.0.254");
        }
        let backends: Vec<(&str, SocketAddr)> = vec![
            ("b1", "10.78.0.11:8080".parse().expect("literal")),
            ("b2", "10.78.0.12:8080".parse().expect("literal")),
            ("b3", "10.78.0.13:8080".parse().expect("literal")),
        ];
        for (name, addr) in &backends {
            start_backend(&mut lab, name, name, *addr);
        }
        let vip: SocketAddr = VIP.parse().expect("literal");
        for n in 1..=nodes {
            let node = format!("n{n}");
            node_config(&lab, &node, vip, &backends);
            start_node(&mut lab, &node);
        }
        L3 { lab, clients }
    }

    /// BIRD on the router (ECMP: `merge paths`) and on nodes n1..n`nodes` (announcing the VIP
    /// while `examples/bird-health.sh` finds ringlb healthy), as in examples/bird.conf. With
    /// `resilient`, the router's BIRD exports into table 100 and `examples/nexthop-sync.sh`
    /// mirrors the VIP's next hops into resilient group 100, which the main table uses.
    pub fn start_bird(&mut self, nodes: usize, resilient: bool) {
        let table = if resilient { "kernel table 100; " } else { "" };
        let mut router = format!(
            "router id 10.78.0.254;\nprotocol device {{}}\n\
             protocol kernel {{ {table}merge paths on; ipv4 {{ import none; export all; }}; }}\n\
             template bgp lb {{ local 10.78.0.254 as 65000; hold time 3; connect retry time 1;\n\
               ipv4 {{ import all; export none; }}; }}\n"
        );
        for n in 1..=nodes {
            router.push_str(&format!(
                "protocol bgp n{n} from lb {{ neighbor 10.78.0.{n} as {}; }}\n",
                65000 + n
            ));
        }
        start_bird(&mut self.lab, "r", &router);
        if resilient {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nexthop-sync.sh");
            let all: Vec<String> = (1..=nodes).map(|n| format!("10.78.0.{n}")).collect();
            let all = all.join(" ");
            self.lab.spawn_env(
                "r",
                "nexthop-sync",
                Path::new("/bin/sh"),
                &[script.to_str().expect("utf-8 path")],
                &[
                    ("PREFIX", "10.78.100.1/32"),
                    ("TABLE", "100"),
                    ("DEV", "eth0"),
                    ("NODES", all.as_str()),
                    ("GROUP", "100"),
                    ("IDLE", "2"),
                    ("INTERVAL", "0.1"),
                ],
            );
        }
        for n in 1..=nodes {
            let node = format!("n{n}");
            let addr = format!("10.78.0.{n}");
            let asn = 65000 + n;
            let conf = format!(
                "router id {addr};\nprotocol device {{}}\n\
                 protocol static vip {{ disabled; ipv4; route 10.78.100.1/32 unreachable; }}\n\
                 protocol bgp uplink {{ local {addr} as {asn}; neighbor 10.78.0.254 as 65000;\n\
                   hold time 3; connect retry time 1;\n\
                   ipv4 {{ import none; export where proto = \"vip\"; }}; }}\n"
            );
            start_bird(&mut self.lab, &node, &conf);
            self.start_gate(&node);
        }
    }

    /// `examples/bird-health.sh` on `node`: announces the VIP while ringlb there is healthy.
    pub fn start_gate(&mut self, node: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bird-health.sh");
        let admin = admin_socket(&self.lab, node);
        let bird = self.lab.dir.join(format!("bird-{node}.ctl"));
        let ringlb = ringlb().to_str().expect("utf-8 path").to_owned();
        self.lab.spawn_env(
            node,
            &format!("gate-{node}"),
            Path::new("/bin/sh"),
            &[script.to_str().expect("utf-8 path")],
            &[
                ("RINGLB", ringlb.as_str()),
                ("ADMIN_SOCKET", admin.to_str().expect("utf-8 path")),
                ("BIRD_SOCKET", bird.to_str().expect("utf-8 path")),
                ("INTERVAL", "0.1"),
            ],
        );
    }

    /// The members of the router's resilient group 100 (`101/102/103`), empty without one.
    pub fn group(&self) -> String {
        let (_, out) = self.lab.exec("r", "ip", &["nexthop", "show", "id", "100"]);
        let words: Vec<&str> = out.split_whitespace().collect();
        words
            .windows(2)
            .find(|w| w[0] == "group")
            .map(|w| w[1].to_owned())
            .unwrap_or_default()
    }

    pub fn wait_group(&self, members: &str, limit: Duration) {
        let what = format!("resilient group {members} on the router");
        wait_for(limit, &what, || self.group() == members);
    }

    /// The next hops of the router's route to the VIP.
    pub fn next_hops(&self) -> BTreeSet<String> {
        let (_, out) = self.lab.exec("r", "ip", &["route", "show", "10.78.100.1"]);
        out.split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_owned())
            .collect()
    }

    pub fn wait_next_hops(&self, count: usize, limit: Duration) {
        let what = format!("{count} next hops for the VIP on the router");
        wait_for(limit, &what, || self.next_hops().len() == count);
    }
}

fn start_bird(lab: &mut Lab, node: &str, conf: &str) {
    let file = lab.write(&format!("bird-{node}.conf"), conf);
    let ctl = lab.dir.join(format!("bird-{node}.ctl"));
    let pid = lab.dir.join(format!("bird-{node}.pid"));
    lab.spawn(
        node,
        &format!("bird-{node}"),
        Path::new("bird"),
        &[
            "-f",
            "-c",
            file.to_str().expect("utf-8 path"),
            "-s",
            ctl.to_str().expect("utf-8 path"),
            "-P",
            pid.to_str().expect("utf-8 path"),
        ],
    );
}

/// Which backend each client reached, over `rounds` new connections each, and which nodes.
fn survey(l3: &L3, rounds: usize) -> BTreeMap<IpAddr, Vec<traffic::Answer>> {
    let clients = l3.clients.clone();
    traffic::in_ns(l3.lab.ns_file("client"), move || {
        let vip: SocketAddr = VIP.parse().expect("literal");
        let mut seen = BTreeMap::new();
        for _ in 0..rounds {
            for &client in &clients {
                let (_, answer) = traffic::connect(client, vip, Duration::from_secs(1))
                    .unwrap_or_else(|e| panic!("{client} -> VIP: {e}"));
                seen.entry(client).or_insert_with(Vec::new).push(answer);
            }
        }
        seen
    })
}

/// Per client, the backend of its last answered attempt before `event` and of its first one
/// after `settled`: the share whose backend stayed the same.
fn kept_backend(
    attempts: &[Attempt],
    clients: &[IpAddr],
    event: Instant,
    settled: Instant,
) -> (usize, usize) {
    let mut kept = 0;
    let mut compared = 0;
    for client in clients {
        let before = attempts
            .iter()
            .rev()
            .filter(|a| a.at < event && a.client == *client)
            .find_map(|a| a.answer.as_ref());
        let after = attempts
            .iter()
            .filter(|a| a.at >= settled && a.client == *client)
            .find_map(|a| a.answer.as_ref());
        if let (Some(b), Some(a)) = (before, after) {
            compared += 1;
            if a.backend == b.backend {
                kept += 1;
            }
        }
    }
    (kept, compared)
}

/// Active-active through BIRD: both nodes carry traffic, every client keeps one backend
/// whichever node it reaches; a node whose ringlb dies is withdrawn, its clients move to the
/// survivor and keep their backends, the survivor's connections are untouched; the node
/// coming back is announced again, and (plain multipath) moves established flows.
pub fn bird_scenario() {
    let mut l3 = L3::build("bgp", 2);
    l3.start_bird(2, false);
    l3.wait_next_hops(2, Duration::from_secs(20));

    let seen = survey(&l3, 4);
    let mut nodes = BTreeMap::new();
    for answers in seen.values() {
        for a in answers {
            *nodes.entry(a.node.clone()).or_insert(0) += 1;
        }
    }
    let consistent = seen
        .values()
        .filter(|answers| answers.iter().all(|a| a.backend == answers[0].backend))
        .count();
    let both = seen
        .values()
        .filter(|answers| answers.iter().any(|a| a.node != answers[0].node))
        .count();
    println!(
        "bgp ecmp: connections per node {nodes:?}; {consistent}/{} clients always on one \
         backend ({both} of them reached both nodes)",
        seen.len()
    );
    assert_eq!(nodes.len(), 2, "both nodes carry traffic");
    assert_eq!(consistent, seen.len());
    assert!(both > 0, "some clients reached both nodes");

    let held = l3.held();
    let load = l3.load();
    std::thread::sleep(Duration::from_millis(500));

    // n1's ringlb dies: the gate sees its health fail and withdraws the route.
    let event = Instant::now();
    l3.lab.kill("n1", libc::SIGKILL);
    l3.wait_next_hops(1, Duration::from_secs(10));
    let withdrawn = event.elapsed();
    std::thread::sleep(Duration::from_millis(700));
    let down = failure_window(&load.attempts(), event);
    let settled = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let (kept, compared) = kept_backend(&load.attempts(), &l3.clients[32..], event, settled);
    let report = held.finish();
    let on = |node: &str| report.broken_where(|n| n == node);
    let (n1_broken, n1_total) = on("10.78.0.1");
    let (n2_broken, n2_total) = on("10.78.0.2");
    println!(
        "bgp: n1's ringlb killed: route withdrawn after {} ms; new connections failed for {} \
         ms ({} failed attempts); {kept}/{compared} clients kept their backend; established: \
         {n1_broken}/{n1_total} on n1 broke, {n2_broken}/{n2_total} on n2 broke",
        withdrawn.as_millis(),
        down.0.as_millis(),
        down.1,
    );
    assert_eq!(n2_broken, 0, "the survivor's connections are untouched");
    assert_eq!(kept, compared, "clients keep their backends");
    assert!(down.0 < Duration::from_secs(3), "{down:?}");

    // n1 comes back: announced again once healthy. The route is plain multipath
    // (hash-threshold): about half the survivor's flows now hash to n1, which resets them.
    let held = l3.held();
    let event = Instant::now();
    start_node(&mut l3.lab, "n1");
    l3.wait_next_hops(2, Duration::from_secs(10));
    let announced = event.elapsed();
    std::thread::sleep(Duration::from_millis(700));
    let report = held.finish();
    let moved = report.broken.iter().filter(|b| b.is_some()).count();
    let attempts = load.finish();
    let back = failure_window(&attempts, event);
    println!(
        "bgp: n1 back: announced after {} ms (ringlb start included); {moved}/{} established \
         connections (all on n2) broke, plain multipath; new connections failed: {}",
        announced.as_millis(),
        report.answers.len(),
        back.1
    );
    assert!(
        moved > 0,
        "hash-threshold moves some flows to the returning node"
    );
}

/// How a group of next hops is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    HashThreshold,
    Resilient,
}

/// Node removal and return with a next-hop group the test installs (`ip nexthop`), as a BGP
/// daemon managing one would, over three nodes: established connections broken on the
/// survivors when n1 is removed and when it comes back. Three, because with a single next
/// hop left the kernel takes its single-path shortcut and stops tracking which buckets are
/// busy (observed: re-adding the second node of two then moves busy buckets too).
pub fn nexthop_scenario(group: Group) {
    let name = match group {
        Group::HashThreshold => "hash-threshold",
        Group::Resilient => "resilient",
    };
    let kind = match group {
        Group::HashThreshold => "",
        Group::Resilient => " type resilient buckets 512 idle_timer 2",
    };
    let mut l3 = L3::build(&format!("nhg-{name}"), 3);
    l3.lab.ip_batch(
        "r",
        &format!(
            "nexthop add id 1 via 10.78.0.1 dev eth0\n\
             nexthop add id 2 via 10.78.0.2 dev eth0\n\
             nexthop add id 3 via 10.78.0.3 dev eth0\n\
             nexthop add id 10 group 1/2/3{kind}\n\
             route add 10.78.100.1/32 nhid 10\n"
        ),
    );
    let held = l3.held();
    let load = l3.load();
    std::thread::sleep(Duration::from_millis(500));
    // Remove n1: its ringlb dies and its next hop leaves the group.
    let event = Instant::now();
    l3.lab.kill("n1", libc::SIGKILL);
    l3.lab
        .ip("r", &format!("nexthop replace id 10 group 2/3{kind}"));
    std::thread::sleep(Duration::from_millis(800));
    let report = held.finish();
    let (removed_broken, survivors) = report.broken_where(|node| node != "10.78.0.1");
    let n1_broken = report.broken.iter().filter(|b| b.is_some()).count() - removed_broken;
    let down = failure_window(&load.attempts(), event);
    let settled = Instant::now();

    // n1 back: ringlb first, then its next hop rejoins, every held connection on n2 or n3.
    start_node(&mut l3.lab, "n1");
    let held = l3.held();
    std::thread::sleep(Duration::from_millis(300));
    let (kept, compared) = kept_backend(&load.attempts(), &l3.clients[32..], event, settled);
    let event = Instant::now();
    l3.lab
        .ip("r", &format!("nexthop replace id 10 group 1/2/3{kind}"));
    // Long enough for idle buckets (idle_timer 2 s) to move to n1.
    std::thread::sleep(Duration::from_millis(3000));
    let report = held.finish();
    let added_broken = report.broken.iter().filter(|b| b.is_some()).count();
    let attempts = load.finish();
    let back = failure_window(&attempts, event);
    let late: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.at > event + Duration::from_millis(2500))
        .collect();
    let n1_after = late
        .iter()
        .filter(|a| a.answer.as_ref().is_some_and(|a| a.node == "10.78.0.1"))
        .count();
    println!(
        "nexthop group {name} (3 nodes): n1 removed: {n1_broken} connections on it broke, \
         {removed_broken}/{} on the survivors broke, new connections failed for {} ms, \
         {kept}/{compared} clients kept their backend; n1 added back: {added_broken}/{} \
         established connections broke, n1 took {n1_after}/{} new connections in the last \
         0.5 s, {} new connections failed",
        survivors,
        down.0.as_millis(),
        report.answers.len(),
        late.len(),
        back.1
    );
    assert_eq!(kept, compared, "clients keep their backends");
    match group {
        Group::HashThreshold => assert!(
            removed_broken + added_broken > 0,
            "hash-threshold moves flows of the survivors"
        ),
        Group::Resilient => {
            assert_eq!(removed_broken, 0, "resilient groups move no surviving flow");
            assert_eq!(added_broken, 0, "resilient groups move no busy flow");
        }
    }
    assert!(n1_after > 0, "the returning node gets new connections");
}

/// Active-active through BIRD with three nodes and a resilient group kept by
/// `examples/nexthop-sync.sh` from BGP's next hops: a node withdrawn for a failed health
/// check and announced again moves no established connection of the others.
pub fn bird_resilient_scenario() {
    let mut l3 = L3::build("bgp-resilient", 3);
    l3.start_bird(3, true);
    l3.wait_group("101/102/103", Duration::from_secs(20));
    let held = l3.held();
    let load = l3.load();
    std::thread::sleep(Duration::from_millis(500));
    let event = Instant::now();
    l3.lab.kill("n1", libc::SIGKILL);
    l3.wait_group("102/103", Duration::from_secs(10));
    let withdrawn = event.elapsed();
    std::thread::sleep(Duration::from_millis(700));
    let report = held.finish();
    let (removed_broken, survivors) = report.broken_where(|node| node != "10.78.0.1");
    let down = failure_window(&load.attempts(), event);
    let settled = Instant::now();

    // n1 back: its ringlb first, with its gate stopped (the route stays withdrawn) while
    // connections are opened on n2 and n3; then the gate, which announces it.
    l3.lab.kill("gate-n1", libc::SIGKILL);
    start_node(&mut l3.lab, "n1");
    let held = l3.held();
    std::thread::sleep(Duration::from_millis(300));
    let event = Instant::now();
    l3.start_gate("n1");
    l3.wait_group("101/102/103", Duration::from_secs(10));
    let announced = event.elapsed();
    std::thread::sleep(Duration::from_millis(3000));
    let report = held.finish();
    let (added_broken, on_survivors) = report.broken_where(|node| node != "10.78.0.1");
    let attempts = load.finish();
    let (kept, compared) = kept_backend(
        &attempts,
        &l3.clients[32..],
        settled - Duration::from_millis(700),
        settled,
    );
    let n1_after = attempts
        .iter()
        .filter(|a| a.at > event + Duration::from_millis(2500))
        .filter(|a| a.answer.as_ref().is_some_and(|a| a.node == "10.78.0.1"))
        .count();
    println!(
        "bgp + resilient group (3 nodes, nexthop-sync.sh): n1's ringlb killed: group updated \
         after {} ms, new connections failed for {} ms ({} attempts), {removed_broken}/{} on \
         the survivors broke, {kept}/{compared} clients kept their backend; n1 back: group \
         updated after {} ms, {added_broken}/{} established connections on the survivors \
         broke, n1 took {n1_after} new connections in the last 0.5 s",
        withdrawn.as_millis(),
        down.0.as_millis(),
        down.1,
        survivors,
        announced.as_millis(),
        on_survivors,
    );
    assert_eq!(removed_broken, 0, "the survivors' flows stay");
    assert_eq!(added_broken, 0, "a returning node moves no busy flow");
    assert_eq!(kept, compared, "clients keep their backends");
    assert!(n1_after > 0, "the returning node gets new connections");
}
