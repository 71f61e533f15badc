//! Active-standby: keepalived (VRRP) on both nodes tracks `ringlb ctl health` and holds the
//! virtual address on one of them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::net::{Lab, wait_for};
use super::traffic::{Held, Load, Outage, outage};
use super::{L2, VIP, admin_socket, ringlb};

/// VRRP advertisement interval of the test, seconds (VRRPv3 counts in centiseconds).
pub const ADVERT_INT: f64 = 0.1;
/// `vrrp_script` interval, seconds.
pub const SCRIPT_INT: f64 = 0.2;

/// keepalived's configuration for `node` (priority `priority`), tracking its ringlb's
/// health; `nopreempt` keeps a backup that took over the master even when a node of higher
/// priority comes back. Follows examples/keepalived.conf, with test timings.
pub fn config(lab: &Lab, node: &str, priority: u8, nopreempt: bool) -> String {
    let socket = admin_socket(lab, node);
    format!(
        r#"global_defs {{
    router_id {node}
    script_user root
    vrrp_garp_master_delay 0
    vrrp_garp_lower_prio_repeat 2
    vrrp_garp_lower_prio_delay 0
}}

vrrp_script ringlb_health {{
    script "{ringlb} ctl --socket {socket} health"
    interval {SCRIPT_INT}
    timeout 1
    fall 1
    rise 1
}}

vrrp_instance ringlb_vip {{
    state BACKUP
    interface eth0
    virtual_router_id 77
    version 3
    priority {priority}
    advert_int {ADVERT_INT}
    {preempt}
    virtual_ipaddress {{
        10.77.0.50/24 dev eth0
    }}
    track_script {{
        ringlb_health
    }}
}}
"#,
        ringlb = ringlb().display(),
        socket = socket.display(),
        preempt = if nopreempt { "nopreempt" } else { "" },
    )
}

/// Starts keepalived (VRRP only, in the foreground) in namespace `node`.
pub fn start(lab: &mut Lab, node: &str, priority: u8, nopreempt: bool) {
    let conf = lab.write(
        &format!("keepalived-{node}.conf"),
        &config(lab, node, priority, nopreempt),
    );
    let pid = lab.dir.join(format!("keepalived-{node}.pid"));
    let vrrp_pid = lab.dir.join(format!("keepalived-vrrp-{node}.pid"));
    let label = format!("keepalived-{node}");
    lab.spawn(
        node,
        &label,
        std::path::Path::new("keepalived"),
        &[
            "--dont-fork",
            "--log-console",
            "--vrrp",
            "--use-file",
            conf.to_str().expect("utf-8 path"),
            "--pid",
            pid.to_str().expect("utf-8 path"),
            "--vrrp_pid",
            vrrp_pid.to_str().expect("utf-8 path"),
        ],
    );
}

/// The node whose ringlb served the last new connection of `load`, waiting at most `limit`
/// for it to be `node`.
pub fn wait_served_by(load: &Load, node: &str, limit: Duration, lab: &Lab) {
    let start = Instant::now();
    loop {
        let attempts = load.attempts();
        let last = attempts
            .iter()
            .rev()
            .take(5)
            .filter(|a| a.answer.as_ref().is_some_and(|a| a.node == node))
            .count();
        if last == 5 {
            return;
        }
        if start.elapsed() > limit {
            panic!(
                "not served by {node} within {limit:?}; last: {:?}\n{}{}",
                attempts.last(),
                lab.log_tail("keepalived-n1"),
                lab.log_tail("keepalived-n2")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn report(what: &str, o: &Outage) {
    println!(
        "keepalived {what}: new connections served by the other node after {} ms ({} failed attempts), {} -> {}",
        o.duration.as_millis(),
        o.failed,
        o.before.as_deref().unwrap_or("-"),
        o.after.as_deref().unwrap_or("-"),
    );
}

/// The address of node `n`.
pub fn addr(node: &str) -> &'static str {
    match node {
        "n1" => "10.77.0.1",
        _ => "10.77.0.2",
    }
}

/// Runs the active-standby scenario; `nopreempt` chooses the configuration.
pub fn scenario(nopreempt: bool) {
    let variant = if nopreempt { "nopreempt" } else { "preempt" };
    let mut l2 = L2::build(&format!("vrrp-{variant}"));
    l2.start_nodes();
    start(&mut l2.lab, "n1", 150, nopreempt);
    start(&mut l2.lab, "n2", 100, nopreempt);
    let vip: SocketAddr = VIP.parse().expect("literal");
    let client_ns = l2.lab.ns_file("client");
    let load = Load::start(
        client_ns.clone(),
        l2.clients[16..].to_vec(),
        vip,
        Duration::from_millis(10),
        Duration::from_secs(60),
    );
    // With nopreempt both start as backup and the first to time out wins; either may.
    // Without it n1, with the higher priority, ends up master: n2 may hold the VIP for a
    // moment first (while n1's keepalived starts or its health check has not passed yet),
    // and n1 preempts it, so wait for n1 rather than take the first node that answers.
    if nopreempt {
        wait_served_by_any(&load, Duration::from_secs(10), &l2.lab);
    } else {
        wait_served_by(&load, addr("n1"), Duration::from_secs(10), &l2.lab);
    }
    let first = last_node(&load);
    let master = if first == addr("n1") { "n1" } else { "n2" };
    let backup = if master == "n1" { "n2" } else { "n1" };

    // 1. SIGKILL the master's ringlb: its health check fails, keepalived goes to FAULT and
    // gives up the VIP; the backup takes it over.
    let held = Held::start(
        client_ns.clone(),
        l2.clients[..16].to_vec(),
        vip,
        Duration::from_millis(50),
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_millis(300));
    let event = Instant::now();
    l2.lab.kill(master, libc::SIGKILL);
    wait_served_by(&load, addr(backup), Duration::from_secs(10), &l2.lab);
    std::thread::sleep(Duration::from_millis(300));
    let killed = outage(&load.attempts(), event);
    report(
        &format!("[{variant}] SIGKILL of the master's ringlb"),
        &killed,
    );
    let held = held.finish();
    let broken = held.broken.iter().filter(|b| b.is_some()).count();
    println!(
        "keepalived [{variant}]: {broken}/{} established connections through the killed \
         node broke (they live in its process)",
        held.answers.len()
    );
    assert_eq!(broken, held.answers.len());

    // 2. The node comes back: with preempt it takes the VIP back (a second, short switch);
    // with nopreempt the backup keeps it.
    let event = Instant::now();
    super::start_node(&mut l2.lab, master);
    if nopreempt {
        std::thread::sleep(Duration::from_secs(2));
        let served = last_node(&load);
        println!(
            "keepalived [{variant}]: {master} back and healthy; VIP stays on {served} after 2 s"
        );
        assert_eq!(served, addr(backup), "nopreempt keeps the current master");
    } else {
        wait_served_by(&load, addr(master), Duration::from_secs(10), &l2.lab);
        std::thread::sleep(Duration::from_millis(300));
        let back = outage(&load.attempts(), event);
        report(&format!("[{variant}] {master} back, preempts"), &back);
    }
    let current = if last_node(&load) == addr("n1") {
        "n1"
    } else {
        "n2"
    };
    let other = if current == "n1" { "n2" } else { "n1" };

    // 3. The current master loses every backend (blackhole routes on it alone): its health
    // fails, the other node takes over.
    let event = Instant::now();
    for b in 11..=13 {
        l2.lab
            .ip(current, &format!("route add blackhole 10.77.0.{b}/32"));
    }
    wait_served_by(&load, addr(other), Duration::from_secs(10), &l2.lab);
    std::thread::sleep(Duration::from_millis(300));
    let unhealthy = outage(&load.attempts(), event);
    report(
        &format!("[{variant}] {current}'s backends unreachable from it"),
        &unhealthy,
    );
    for b in 11..=13 {
        l2.lab
            .ip(current, &format!("route del blackhole 10.77.0.{b}/32"));
    }
    std::thread::sleep(Duration::from_secs(1));

    // 4. Without preemption the master is still `other`: hand it over for maintenance by
    // switching its listener off (`ringlb ctl disable`), which fails its health. With
    // preemption the master is n1 again: cut it off the network (a node that dies whole)
    // and the backup notices missed adverts.
    if nopreempt {
        let event = Instant::now();
        let socket = admin_socket(&l2.lab, other);
        let (ok, out) = l2.lab.exec(
            other,
            ringlb().to_str().expect("utf-8 path"),
            &[
                "ctl",
                "--socket",
                socket.to_str().expect("utf-8 path"),
                "disable",
                "vip",
            ],
        );
        assert!(ok, "{out}");
        wait_served_by(&load, addr(current), Duration::from_secs(10), &l2.lab);
        std::thread::sleep(Duration::from_millis(300));
        let handed = outage(&load.attempts(), event);
        report(
            &format!("[{variant}] ringlb ctl disable vip on {other}"),
            &handed,
        );
    } else {
        wait_served_by(&load, addr("n1"), Duration::from_secs(10), &l2.lab);
        let event = Instant::now();
        l2.lab.ip("sw", "link set p1 down");
        wait_served_by(&load, addr("n2"), Duration::from_secs(10), &l2.lab);
        std::thread::sleep(Duration::from_millis(300));
        let lost = outage(&load.attempts(), event);
        report(
            &format!("[{variant}] n1 cut off (VRRP detection: 3 x {ADVERT_INT} s + skew)"),
            &lost,
        );
        l2.lab.ip("sw", "link set p1 up");
        wait_served_by(&load, addr("n1"), Duration::from_secs(10), &l2.lab);
        assert!(lost.duration < Duration::from_secs(3), "{lost:?}");
    }
    let attempts = load.finish();
    println!(
        "keepalived [{variant}]: {} new connections in all, {} failed",
        attempts.len(),
        attempts.iter().filter(|a| a.answer.is_none()).count()
    );
    assert!(killed.duration < Duration::from_secs(3), "{killed:?}");
    assert!(unhealthy.duration < Duration::from_secs(3), "{unhealthy:?}");
}

fn last_node(load: &Load) -> String {
    load.attempts()
        .iter()
        .rev()
        .find_map(|a| a.answer.as_ref().map(|a| a.node.clone()))
        .unwrap_or_default()
}

fn wait_served_by_any(load: &Load, limit: Duration, lab: &Lab) {
    let what = format!(
        "the VIP served{}{}",
        lab.log_tail("keepalived-n1"),
        lab.log_tail("keepalived-n2")
    );
    wait_for(limit, &what, || {
        load.attempts()
            .iter()
            .rev()
            .take(3)
            .filter(|a| a.answer.is_some())
            .count()
            == 3
    });
}
