//! Reading a process tree's costs from `/proc`: CPU time, context switches, RSS, threads,
//! io-wq workers, and established TCP connections on a port.
//!
//! Every reader is best effort: a process or thread that vanished between listing and reading
//! simply contributes nothing.

use std::fs;
use std::path::Path;

/// A process tree's counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// User + system CPU seconds of every process (all threads, live and exited).
    pub cpu_secs: f64,
    /// Voluntary context switches summed over the live threads.
    pub voluntary_cs: u64,
    /// Involuntary context switches summed over the live threads.
    pub involuntary_cs: u64,
    /// Resident set size summed over the processes, in KiB.
    pub rss_kib: u64,
    /// Live threads.
    pub threads: u64,
}

/// The part of `/proc/PID/stat` after the command name, split on whitespace; field 3 of
/// proc(5) (`state`) is index 0.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Clock ticks per second (`CLK_TCK`).
fn ticks_per_sec() -> f64 {
    rustix::param::clock_ticks_per_second().max(1) as f64
}

/// utime + stime of process `pid` (all its threads, including exited ones), in seconds.
pub fn cpu_secs(pid: i32) -> Option<f64> {
    let f = stat_fields(pid)?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_sec())
}

/// The parent of `pid`.
pub fn ppid(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// `pid` and every process descended from it, `pid` first.
pub fn process_tree(pid: i32) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(pp) = ppid(p) {
                parents.push((p, pp));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for &(p, pp) in &parents {
            if pp == parent && !tree.contains(&p) {
                tree.push(p);
            }
        }
        i += 1;
    }
    tree
}

/// The value of a `Key:   123 kB`-style line of a status file.
fn status_value(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Thread ids of process `pid`.
pub fn tasks(pid: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Number of live threads of process `pid`.
pub fn thread_count(pid: i32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count() as u64)
}

/// Threads of `pid` whose name starts with `iou-wrk` (io_uring's io-wq workers).
pub fn iowq_workers(pid: i32) -> u64 {
    tasks(pid)
        .into_iter()
        .filter(|t| {
            fs::read_to_string(format!("/proc/{pid}/task/{t}/comm"))
                .is_ok_and(|c| c.starts_with("iou-wrk"))
        })
        .count() as u64
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_value(&s, "VmRSS")
}

/// (voluntary, involuntary) context switches summed over the live threads of `pid`.
pub fn context_switches(pid: i32) -> (u64, u64) {
    let mut sum = (0, 0);
    for t in tasks(pid) {
        if let Ok(s) = fs::read_to_string(format!("/proc/{pid}/task/{t}/status")) {
            sum.0 += status_value(&s, "voluntary_ctxt_switches").unwrap_or(0);
            sum.1 += status_value(&s, "nonvoluntary_ctxt_switches").unwrap_or(0);
        }
    }
    sum
}

/// The counters of the processes `pids`, summed.
pub fn snapshot(pids: &[i32]) -> Snapshot {
    let mut s = Snapshot::default();
    for &p in pids {
        s.cpu_secs += cpu_secs(p).unwrap_or(0.0);
        let (v, i) = context_switches(p);
        s.voluntary_cs += v;
        s.involuntary_cs += i;
        s.rss_kib += rss_kib(p).unwrap_or(0);
        s.threads += thread_count(p);
    }
    s
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z"))
}

/// `/proc/net/tcp`'s state of an established connection.
const TCP_ESTABLISHED: &str = "01";
/// `/proc/net/tcp`'s state of a listening socket.
const TCP_LISTEN: &str = "0A";

/// Established TCP sockets (IPv4 and IPv6) whose local port is `port`.
pub fn established_on_port(port: u16) -> usize {
    tcp_in_state(port, TCP_ESTABLISHED)
}

/// Listening TCP sockets (IPv4 and IPv6) on local port `port`.
pub fn tcp_listening_on_port(port: u16) -> usize {
    tcp_in_state(port, TCP_LISTEN)
}

fn tcp_in_state(port: u16, state: &str) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .map(|p| count_tcp(Path::new(p), port, state))
        .sum()
}

/// The `/proc/net/udp{,6}` lines of sockets bound to local port `port`, split in fields.
fn udp_sockets_on_port(port: u16) -> Vec<Vec<String>> {
    let want = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .flat_map(|p| {
            let text = fs::read_to_string(p).unwrap_or_default();
            text.lines()
                .skip(1)
                .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
                .filter(|f| f.get(1).is_some_and(|a| a.ends_with(&want)))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// UDP sockets (IPv4 and IPv6) bound to local port `port` (a UDP proxy is ready once its
/// listener socket shows up here).
pub fn udp_bound_on_port(port: u16) -> usize {
    udp_sockets_on_port(port).len()
}

/// Datagrams the kernel dropped on the UDP sockets bound to local port `port` (the last field
/// of `/proc/net/udp`: a full receive buffer, mostly), summed over them (SO_REUSEPORT).
pub fn udp_drops_on_port(port: u16) -> u64 {
    udp_sockets_on_port(port)
        .iter()
        .filter_map(|f| f.last()?.parse::<u64>().ok())
        .sum()
}

fn count_tcp(path: &Path, port: u16, wanted: &str) -> usize {
    let Ok(s) = fs::read_to_string(path) else {
        return 0;
    };
    let want = format!(":{port:04X}");
    s.lines()
        .skip(1)
        .filter(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1).unwrap_or("");
            let state = f.nth(1).unwrap_or("");
            local.ends_with(&want) && state == wanted
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id() as i32;
        assert!(cpu_secs(me).is_some());
        assert!(rss_kib(me).unwrap_or(0) > 0);
        assert!(thread_count(me) >= 1);
        assert!(alive(me));
        assert_eq!(process_tree(me)[0], me);
        let s = snapshot(&[me]);
        assert!(s.voluntary_cs + s.involuntary_cs > 0);
        let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        let port = u.local_addr().expect("its address").port();
        assert_eq!(udp_bound_on_port(port), 1);
        assert_eq!(udp_drops_on_port(port), 0);
        let t = std::net::TcpListener::bind("127.0.0.1:0").expect("a TCP listener");
        let port = t.local_addr().expect("its address").port();
        assert_eq!(tcp_listening_on_port(port), 1);
        assert_eq!(established_on_port(port), 0);
    }

    #[test]
    fn status_values() {
        let s = "Name:\tx\nVmRSS:\t  1234 kB\nvoluntary_ctxt_switches:\t7\n";
        assert_eq!(status_value(s, "VmRSS"), Some(1234));
        assert_eq!(status_value(s, "voluntary_ctxt_switches"), Some(7));
        assert_eq!(status_value(s, "Missing"), None);
    }
}
