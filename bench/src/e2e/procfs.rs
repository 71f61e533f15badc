//! Reading a process tree's costs from `/proc`: CPU time, context switches, RSS, threads,
//! io-wq workers, established TCP connections on a port, and the whole machine's CPU time
//! (`/proc/stat`).
//!
//! Every reader is best effort: a process or thread that vanished between listing and reading
//! simply contributes nothing.

use std::fs;
use std::path::Path;
use std::time::Instant;

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

/// One `cpu` line of `/proc/stat`: the busy, softirq and idle clock ticks so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CpuTicks {
    /// user + nice + system + irq + softirq + steal (not idle, iowait, guest: guest time is
    /// already counted in user and nice). Sampled by the scheduler tick: a burst of work that
    /// starts after one tick and ends before the next is not in it.
    pub busy: u64,
    /// softirq alone (tick-sampled too).
    pub softirq: u64,
    /// idle + iowait: measured from idle entry to exit on a tickless (NO_HZ) kernel, not
    /// sampled, so that the wall time less this is what the CPU really worked.
    pub idle: u64,
}

impl CpuTicks {
    /// The ticks of one `cpu` / `cpuN` line's numbers (user nice system idle iowait irq
    /// softirq steal ...); `None` if it has fewer than the first eight.
    fn parse(fields: &[u64]) -> Option<CpuTicks> {
        let [user, nice, system, idle, iowait, irq, softirq, steal] = *fields.get(..8)? else {
            return None;
        };
        Some(CpuTicks {
            busy: user + nice + system + irq + softirq + steal,
            softirq,
            idle: idle + iowait,
        })
    }
}

/// The whole machine's CPU counters at one instant (`/proc/stat`), with the monotonic clock
/// read beside them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MachineCpu {
    /// The aggregate `cpu` line (all CPUs).
    pub all: CpuTicks,
    /// The `cpuN` lines: (N, ticks).
    pub per_cpu: Vec<(usize, CpuTicks)>,
    /// When the counters were read (none for parsed text).
    #[serde(skip)]
    pub at: Option<Instant>,
}

/// What the whole machine's CPUs spent between two [`MachineCpu`] samples, in seconds.
///
/// Busy time is the wall time less idle time, CPU by CPU, not the sum of the tick-sampled
/// busy counters: a paced load (iperf3 `-b`, wrk at a rate) wakes on timers that fire just
/// after a tick and sleeps again before the next, and the tick then charges its work to no
/// one (see kernel-notes.md, "What the whole machine pays").
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MachineCost {
    /// Busy seconds of all CPUs together: the window's length times the CPUs less their
    /// idle and iowait time.
    pub busy_secs: f64,
    /// The tick-sampled busy counters' sum over the same window (user+nice+system+irq+
    /// softirq+steal), kept beside for comparison.
    pub ticked_busy_secs: f64,
    /// Softirq seconds (tick-sampled: no precise counter exists without IRQ_TIME_ACCOUNTING).
    pub softirq_secs: f64,
    /// Busy seconds of each CPU: (N, seconds).
    pub per_cpu_busy_secs: Vec<(usize, f64)>,
}

impl MachineCpu {
    /// Parses the text of `/proc/stat`; `None` without an aggregate `cpu` line.
    pub fn parse(text: &str) -> Option<MachineCpu> {
        let mut all = None;
        let mut per_cpu = Vec::new();
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let Some(name) = f.next().and_then(|n| n.strip_prefix("cpu")) else {
                continue;
            };
            let nums: Vec<u64> = f.map_while(|x| x.parse().ok()).collect();
            let Some(ticks) = CpuTicks::parse(&nums) else {
                continue;
            };
            if name.is_empty() {
                all = Some(ticks);
            } else if let Ok(n) = name.parse() {
                per_cpu.push((n, ticks));
            }
        }
        Some(MachineCpu {
            all: all?,
            per_cpu,
            at: None,
        })
    }

    /// Reads `/proc/stat` now.
    pub fn now() -> Option<MachineCpu> {
        let text = fs::read_to_string("/proc/stat").ok()?;
        let at = Instant::now();
        Some(MachineCpu {
            at: Some(at),
            ..MachineCpu::parse(&text)?
        })
    }

    /// What was spent since `before`, with `ticks` clock ticks per second (counters that went
    /// backwards count nothing; CPUs not in both samples are left out; a CPU is busy for at
    /// most the window's length, and for none of it when either sample has no time).
    pub fn since_with(&self, before: &MachineCpu, ticks: f64) -> MachineCost {
        let secs = |a: u64, b: u64| a.saturating_sub(b) as f64 / ticks;
        let wall = match (before.at, self.at) {
            (Some(b), Some(a)) => a.saturating_duration_since(b).as_secs_f64(),
            _ => 0.0,
        };
        let per_cpu_busy_secs: Vec<(usize, f64)> = self
            .per_cpu
            .iter()
            .filter_map(|&(n, t)| {
                let (_, b) = before.per_cpu.iter().find(|(m, _)| *m == n)?;
                Some((n, (wall - secs(t.idle, b.idle)).max(0.0)))
            })
            .collect();
        MachineCost {
            busy_secs: per_cpu_busy_secs.iter().map(|(_, s)| s).sum(),
            ticked_busy_secs: secs(self.all.busy, before.all.busy),
            softirq_secs: secs(self.all.softirq, before.all.softirq),
            per_cpu_busy_secs,
        }
    }

    /// What was spent since `before`, in seconds (`CLK_TCK`).
    pub fn since(&self, before: &MachineCpu) -> MachineCost {
        self.since_with(before, ticks_per_sec())
    }
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

    const STAT_BEFORE: &str = "cpu  100 10 50 9000 20 5 7 3 0 0\n\
cpu0 60 5 30 4500 10 3 4 2 0 0\n\
cpu1 40 5 20 4500 10 2 3 1 0 0\n\
intr 12345 0 0\n\
ctxt 999\n\
softirq 1000 1 2 3\n";
    const STAT_AFTER: &str = "cpu  300 10 150 9100 90 15 57 3 40 0\n\
cpu0 200 5 100 4520 50 10 40 2 40 0\n\
cpu1 100 5 50 4580 40 5 17 1 0 0\n\
intr 23456 0 0\n";

    #[test]
    fn parses_proc_stat() {
        let m = MachineCpu::parse(STAT_BEFORE).expect("a cpu line");
        // Busy: 100 + 10 + 50 + 5 + 7 + 3; idle and iowait (9000 + 20) apart.
        let ticks = |busy, softirq, idle| CpuTicks {
            busy,
            softirq,
            idle,
        };
        assert_eq!(m.all, ticks(175, 7, 9020));
        assert_eq!(
            m.per_cpu,
            vec![(0, ticks(104, 4, 4510)), (1, ticks(71, 3, 4510))]
        );
        assert_eq!(m.at, None);
        // The `softirq` line is not a CPU; text without a `cpu` line is nothing.
        assert_eq!(MachineCpu::parse("intr 1\nsoftirq 1 2 3 4 5 6 7 8\n"), None);
        // Too few fields: left out.
        assert_eq!(MachineCpu::parse("cpu 1 2 3\n"), None);
        assert!(MachineCpu::now().is_some_and(|m| !m.per_cpu.is_empty() && m.at.is_some()));
    }

    #[test]
    fn machine_cost_arithmetic() {
        let t0 = Instant::now();
        let mut before = MachineCpu::parse(STAT_BEFORE).expect("before");
        let mut after = MachineCpu::parse(STAT_AFTER).expect("after");
        before.at = Some(t0);
        after.at = Some(t0 + std::time::Duration::from_secs(2));
        let c = after.since_with(&before, 100.0);
        // Busy is the 2 s window less idle+iowait: cpu0 2 - (4570-4510)/100 = 1.4 s,
        // cpu1 2 - (4620-4510)/100 = 0.9 s.
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert_eq!(c.per_cpu_busy_secs.len(), 2);
        assert!(near(c.per_cpu_busy_secs[0].1, 1.4) && near(c.per_cpu_busy_secs[1].1, 0.9));
        assert!(near(c.busy_secs, 2.3), "{c:?}");
        // The tick-sampled sum beside it: 300+10+150+15+57+3 = 535 (guest, 40, is inside
        // user, not added), less 175.
        assert!(near(c.ticked_busy_secs, (535.0 - 175.0) / 100.0));
        assert!(near(c.softirq_secs, 0.5));
        // Idle longer than the window (counter granularity) is no work, not negative work.
        after.at = Some(t0 + std::time::Duration::from_millis(500));
        let short = after.since_with(&before, 100.0);
        assert_eq!(short.per_cpu_busy_secs, vec![(0, 0.0), (1, 0.0)]);
        // Backwards counters (a CPU went offline and came back) count nothing, nor does a
        // window without times.
        let back = before.since_with(&after, 100.0);
        assert_eq!((back.busy_secs, back.ticked_busy_secs), (0.0, 0.0));
        assert_eq!(back.softirq_secs, 0.0);
        before.at = None;
        assert_eq!(after.since_with(&before, 100.0).busy_secs, 0.0);
    }

    #[test]
    fn status_values() {
        let s = "Name:\tx\nVmRSS:\t  1234 kB\nvoluntary_ctxt_switches:\t7\n";
        assert_eq!(status_value(s, "VmRSS"), Some(1234));
        assert_eq!(status_value(s, "voluntary_ctxt_switches"), Some(7));
        assert_eq!(status_value(s, "Missing"), None);
    }
}
