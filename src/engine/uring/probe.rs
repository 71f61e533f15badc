//! What the running kernel's io_uring offers, probed once at start-up.
//!
//! Every optional feature is tried, not assumed from the version: distribution kernels backport
//! features, and `kernel.io_uring_disabled` or a seccomp filter can take io_uring away entirely.
//! Where only a version tells (multishot receive shares its opcode with plain receive), the
//! version is read from `/proc/sys/kernel/osrelease`.

use std::fmt::Write as _;

use io_uring::{IoUring, Probe, opcode};

use crate::config::Features;
use crate::engine::EngineError;

/// The minimum kernel ringlb's io_uring engine supports.
pub const MIN_KERNEL: (u32, u32) = (5, 19);

/// What the kernel has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelFeatures {
    pub version: (u32, u32),
    pub accept: bool,
    pub multishot_accept: bool,
    pub connect: bool,
    pub recv_send: bool,
    pub multishot_recv: bool,
    pub buffer_ring: bool,
    pub splice: bool,
    pub poll: bool,
    pub shutdown: bool,
    pub close: bool,
    pub cancel: bool,
    pub link_timeout: bool,
    pub single_issuer: bool,
    pub defer_taskrun: bool,
    pub coop_taskrun: bool,
    pub send_bundle: bool,
    pub iowq_max_workers: bool,
    pub ext_arg: bool,
}

/// What the engine will use: the kernel's features less the ones the configuration switched off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub multishot_accept: bool,
    pub multishot_recv: bool,
    pub buffer_ring: bool,
    pub defer_taskrun: bool,
    pub coop_taskrun: bool,
    pub send_bundle: bool,
    /// Splice with direct calls when the ring reports readiness, instead of
    /// `IORING_OP_SPLICE` (which the kernel always runs on an io-wq thread).
    pub inline_splice: bool,
    /// Copy mode: a window of hot buffers in the provided-buffer ring (see `buf_window`).
    pub hot_buffers: bool,
    /// Half-close with a direct `shutdown(2)` instead of `IORING_OP_SHUTDOWN` (which the
    /// kernel always runs on an io-wq thread).
    pub inline_shutdown: bool,
}

impl KernelFeatures {
    /// Probe the running kernel. Fails only when io_uring itself cannot be used.
    pub fn probe() -> Result<Self, EngineError> {
        let version = kernel_version();
        let ring = IoUring::new(8).map_err(|e| {
            EngineError::Unsupported(format!(
                "io_uring_setup failed ({e}); check kernel.io_uring_disabled and seccomp \
                 (Docker's default profile blocks io_uring); try --engine epoll"
            ))
        })?;
        let mut probe = Probe::new();
        let have_probe = ring.submitter().register_probe(&mut probe).is_ok();
        let op = |code: u8| have_probe && probe.is_supported(code);
        let at_least = |major: u32, minor: u32| version >= (major, minor);
        let mut iowq = [0u32; 2];
        let iowq_max_workers = ring
            .submitter()
            .register_iowq_max_workers(&mut iowq)
            .is_ok();
        let single_issuer = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder()
            .setup_single_issuer()
            .build(8)
            .is_ok();
        let defer_taskrun = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(8)
            .is_ok();
        let coop_taskrun = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder()
            .setup_coop_taskrun()
            .build(8)
            .is_ok();
        let buffer_ring = super::buf_ring::probe(&ring);
        Ok(KernelFeatures {
            version,
            accept: op(opcode::Accept::CODE),
            multishot_accept: op(opcode::Accept::CODE) && at_least(5, 19),
            connect: op(opcode::Connect::CODE),
            recv_send: op(opcode::Recv::CODE) && op(opcode::Send::CODE),
            multishot_recv: op(opcode::Recv::CODE) && at_least(6, 0),
            buffer_ring,
            splice: op(opcode::Splice::CODE),
            poll: op(opcode::PollAdd::CODE),
            shutdown: op(opcode::Shutdown::CODE),
            close: op(opcode::Close::CODE) && ring.params().is_feature_skip_cqe_on_success(),
            cancel: op(opcode::AsyncCancel::CODE),
            link_timeout: op(opcode::LinkTimeout::CODE),
            single_issuer,
            defer_taskrun,
            coop_taskrun,
            send_bundle: ring.params().is_feature_recvsend_bundle(),
            iowq_max_workers,
            ext_arg: ring.params().is_feature_ext_arg(),
        })
    }

    /// The operations without which the engine cannot run at all.
    pub fn missing_required(&self) -> Vec<&'static str> {
        let required = [
            // Closing relies on cancel-by-fd with ALL (5.19): without it a connection waiting
            // on a silent peer could never be freed.
            (self.version >= MIN_KERNEL, "Linux 5.19 or later"),
            (self.accept, "IORING_OP_ACCEPT"),
            (self.connect, "IORING_OP_CONNECT"),
            (self.recv_send, "IORING_OP_RECV/SEND"),
            (self.poll, "IORING_OP_POLL_ADD"),
            (self.shutdown, "IORING_OP_SHUTDOWN"),
            (self.close, "IORING_OP_CLOSE with IOSQE_CQE_SKIP_SUCCESS"),
            (self.cancel, "IORING_OP_ASYNC_CANCEL"),
            (self.link_timeout, "IORING_OP_LINK_TIMEOUT"),
            (self.splice, "IORING_OP_SPLICE"),
            (self.ext_arg, "IORING_FEAT_EXT_ARG"),
        ];
        required
            .iter()
            .filter(|(have, _)| !have)
            .map(|(_, name)| *name)
            .collect()
    }

    /// Combine with the configuration's switches.
    pub fn plan(&self, wanted: &Features) -> Plan {
        let buffer_ring = self.buffer_ring && wanted.buffer_ring;
        Plan {
            multishot_accept: self.multishot_accept && wanted.multishot,
            // Multishot receive needs provided buffers to pick from.
            multishot_recv: self.multishot_recv && wanted.multishot && buffer_ring,
            buffer_ring,
            defer_taskrun: self.defer_taskrun && wanted.defer_taskrun,
            coop_taskrun: self.coop_taskrun,
            send_bundle: self.send_bundle && wanted.send_bundle && buffer_ring,
            inline_splice: wanted.inline_splice,
            hot_buffers: wanted.hot_buffers && buffer_ring,
            inline_shutdown: wanted.inline_shutdown,
        }
    }
}

/// The kernel release as (major, minor), or (0, 0) when it cannot be read.
pub fn kernel_version() -> (u32, u32) {
    let text = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    parse_version(&text)
}

fn parse_version(text: &str) -> (u32, u32) {
    let mut parts = text
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn read_sysctl(path: &str) -> String {
    std::fs::read_to_string(path).map_or_else(|_| "unreadable".into(), |s| s.trim().to_string())
}

/// The `ringlb doctor` report: what the kernel offers, what ringlb uses, and what replaces
/// anything missing.
pub fn report() -> Result<String, EngineError> {
    let k = KernelFeatures::probe()?;
    let plan = k.plan(&Features {
        multishot: true,
        buffer_ring: true,
        send_bundle: true,
        defer_taskrun: true,
        inline_splice: true,
        hot_buffers: true,
        loopback_copy: true,
        inline_shutdown: true,
    });
    let mut out = String::new();
    let (major, minor) = k.version;
    let _ = writeln!(
        out,
        "kernel {major}.{minor} (ringlb needs {}.{}+)",
        MIN_KERNEL.0, MIN_KERNEL.1
    );
    let _ = writeln!(
        out,
        "kernel.io_uring_disabled = {}",
        read_sysctl("/proc/sys/kernel/io_uring_disabled")
    );
    let _ = writeln!(
        out,
        "net.core.somaxconn = {}",
        read_sysctl("/proc/sys/net/core/somaxconn")
    );
    let _ = writeln!(
        out,
        "net.ipv4.ip_local_port_range = {}",
        read_sysctl("/proc/sys/net/ipv4/ip_local_port_range")
    );
    // Read before raising it, so that the first figure is what the shell gave.
    let nofile = crate::sys::limits::nofile();
    let _ = writeln!(
        out,
        "RLIMIT_NOFILE = {nofile}; run and check raise the soft limit to the hard one, and \
         max_connections defaults to what that allows\n"
    );
    let _ = writeln!(
        out,
        "{:<34} {:<8} {:<8} fallback",
        "feature (kernel)", "kernel", "ringlb"
    );
    let rows: [(&str, bool, bool, &str); 14] = [
        (
            "multishot accept (5.19)",
            k.multishot_accept,
            plan.multishot_accept,
            "single-shot accept, re-armed per client",
        ),
        (
            "provided buffer ring (5.19)",
            k.buffer_ring,
            plan.buffer_ring,
            "per-worker buffer pool, one buffer per receive",
        ),
        (
            "multishot recv (6.0)",
            k.multishot_recv,
            plan.multishot_recv,
            "single-shot recv with buffer select",
        ),
        (
            "COOP_TASKRUN (5.19)",
            k.coop_taskrun,
            plan.coop_taskrun && !plan.defer_taskrun,
            "default task-work signalling",
        ),
        (
            "SINGLE_ISSUER (6.0)",
            k.single_issuer,
            plan.defer_taskrun,
            "none needed",
        ),
        (
            "DEFER_TASKRUN (6.1)",
            k.defer_taskrun,
            plan.defer_taskrun,
            "COOP_TASKRUN",
        ),
        (
            "send bundles (6.10)",
            k.send_bundle,
            plan.send_bundle,
            "sendmsg of up to 16 queued buffers",
        ),
        (
            "IOWQ_MAX_WORKERS (5.15)",
            k.iowq_max_workers,
            k.iowq_max_workers,
            "io-wq unbounded (splice may spawn threads)",
        ),
        ("splice (5.7)", k.splice, k.splice, "none: required"),
        ("shutdown (5.11)", k.shutdown, k.shutdown, "none: required"),
        (
            "close, skip success CQE (5.17)",
            k.close,
            k.close,
            "none: required",
        ),
        (
            "link timeout (5.5)",
            k.link_timeout,
            k.link_timeout,
            "none: required",
        ),
        (
            "async cancel by fd (5.19)",
            k.cancel,
            k.cancel,
            "none: required",
        ),
        (
            "ext arg wait timeout (5.11)",
            k.ext_arg,
            k.ext_arg,
            "none: required",
        ),
    ];
    let yes = |b: bool| if b { "yes" } else { "no" };
    for (name, have, used, fallback) in rows {
        let _ = writeln!(
            out,
            "{name:<34} {:<8} {:<8} {fallback}",
            yes(have),
            yes(used)
        );
    }
    let missing = k.missing_required();
    if missing.is_empty() {
        let _ = writeln!(
            out,
            "\nthe io_uring engine can run here; epoll and blocking always can"
        );
    } else {
        let _ = writeln!(
            out,
            "\nthe io_uring engine cannot run here, missing: {}; use --engine epoll",
            missing.join(", ")
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_release_strings() {
        assert_eq!(parse_version("6.18.44-fc-v595\n"), (6, 18));
        assert_eq!(parse_version("5.19.0"), (5, 19));
        assert_eq!(parse_version("garbage"), (0, 0));
        assert_eq!(parse_version(""), (0, 0));
    }
}
