//! File descriptors against `RLIMIT_NOFILE`, and the process-wide `max_connections` (HAProxy
//! `maxconn`) they allow.
//!
//! A configuration spends descriptors in three ways:
//! - a fixed reserve: [`FD_RESERVE_PROCESS`] for the process, and per worker
//!   [`FD_RESERVE_PER_WORKER`] plus one listening socket per listener;
//! - UDP flows, reserved too: each worker holds, per UDP listener, its socket and up to the
//!   pool's `udp_max_flows` flows of one connected UDP socket each (see [`udp_sockets`]);
//! - pipes, when a listener splices (splice or auto mode): each worker's pool keeps up to
//!   `tuning.pipe_pool` idle pipes of [`FDS_PER_PIPE`] descriptors, and those are reserved.
//!   Pipes in use beyond that number are not budgeted (nothing bounds them but the
//!   connections): a pipe that cannot be created fails its own connection, not the process;
//! - [`FDS_PER_CONNECTION`] per connection, for `max_connections` plus the overshoot the
//!   engine may admit in a race (see [`overshoot`]).
//!
//! As HAProxy does, the soft limit is first raised to the hard one (`sys::limits`, at start);
//! with `max_connections` left out, it is derived from what remains, and a configured value
//! that cannot fit is an error.

use super::limits::*;
use super::{EngineKind, Listener, Mode, Pool, Tuning, UdpListener};

/// `RLIMIT_NOFILE`; `u64::MAX` stands for unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit: what `open`, `socket` and `accept` are held to.
    pub soft: u64,
    /// The hard limit: how far the soft one may be raised without privileges.
    pub hard: u64,
}

impl FdLimit {
    /// No limit at all.
    pub const UNLIMITED: FdLimit = FdLimit {
        soft: u64::MAX,
        hard: u64::MAX,
    };
}

impl std::fmt::Display for FdLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |n: u64| {
            if n == u64::MAX {
                "unlimited".to_owned()
            } else {
                n.to_string()
            }
        };
        write!(f, "{} (hard limit {})", show(self.soft), show(self.hard))
    }
}

/// What a configuration looks like to the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub engine: EngineKind,
    /// Workers (the blocking engine counts as one: it has one slot table).
    pub workers: u64,
    pub listeners: u64,
    /// Some listener forwards in splice or auto mode.
    pub splices: bool,
    /// `tuning.pipe_pool`.
    pub pipe_pool: u64,
    /// `tuning.max_connections`: the size of each worker's slot table.
    pub worker_max_connections: u64,
    /// Descriptors the UDP listeners may hold, their flows included (see [`udp_sockets`]).
    pub udp_sockets: u64,
}

impl Shape {
    /// The shape of a configuration with `workers` workers (resolved), `listeners` and
    /// `tuning`, on `engine`.
    pub fn of(
        engine: EngineKind,
        workers: usize,
        listeners: &[Listener],
        tuning: &Tuning,
    ) -> Shape {
        Shape {
            engine,
            workers: match engine {
                EngineKind::Blocking => 1,
                _ => workers as u64,
            },
            listeners: listeners.len() as u64,
            splices: listeners.iter().any(|l| l.mode != Mode::Copy),
            pipe_pool: tuning.pipe_pool.into(),
            worker_max_connections: tuning.max_connections.into(),
            udp_sockets: 0,
        }
    }

    /// This shape with the UDP listeners `udp` (their pools in `pools`) run by `workers`
    /// workers (resolved) counted in.
    pub fn with_udp(self, workers: usize, udp: &[UdpListener], pools: &[Pool]) -> Shape {
        Shape {
            udp_sockets: udp_sockets(workers as u64, udp, pools),
            ..self
        }
    }
}

/// Descriptors UDP listeners may hold with `workers` workers: per listener and worker, its
/// socket and its pool's `udp_max_flows` flows, each a UDP socket connected to the flow's
/// backend. Every engine is counted with one flow table per worker (the blocking engine
/// too, as the bound that holds whichever way it runs them); a flow evicted to make room
/// closes its socket, so the tables never hold more.
pub fn udp_sockets(workers: u64, udp: &[UdpListener], pools: &[Pool]) -> u64 {
    udp.iter()
        .map(|l| {
            let flows = pools.get(l.pool).map_or(0, |p| u64::from(p.udp.max_flows));
            workers.saturating_mul(flows.saturating_add(1))
        })
        .fold(0, u64::saturating_add)
}

/// How a configuration spends descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdBudget {
    /// Descriptors that do not depend on the connections.
    pub reserve: u64,
    /// Descriptors per connection.
    pub per_connection: u64,
    /// Connections the engine may hold beyond `max_connections` (see [`overshoot`]).
    pub overshoot: u64,
}

impl FdBudget {
    /// The budget of a configuration of `shape`.
    pub fn new(shape: &Shape) -> FdBudget {
        let pipes = if shape.splices {
            shape.workers.saturating_mul(shape.pipe_pool)
        } else {
            0
        };
        let per_worker = FD_RESERVE_PER_WORKER.saturating_add(shape.listeners);
        FdBudget {
            reserve: FD_RESERVE_PROCESS
                .saturating_add(shape.workers.saturating_mul(per_worker))
                .saturating_add(pipes.saturating_mul(FDS_PER_PIPE))
                .saturating_add(shape.udp_sockets),
            per_connection: FDS_PER_CONNECTION,
            overshoot: overshoot(shape.engine, shape.workers, shape.listeners),
        }
    }

    /// Descriptors needed with `max_connections` open.
    pub fn need(&self, max_connections: u64) -> u64 {
        max_connections
            .saturating_add(self.overshoot)
            .saturating_mul(self.per_connection)
            .saturating_add(self.reserve)
    }

    /// The most connections a soft limit of `soft` descriptors allows (0: not even one).
    pub fn most_connections(&self, soft: u64) -> u64 {
        (soft.saturating_sub(self.reserve) / self.per_connection).saturating_sub(self.overshoot)
    }
}

/// Clients an engine may take beyond `max_connections` in a race, process-wide.
///
/// - io_uring: an accept in flight when the process fills up may still complete before its
///   cancel does, at most one per listener and worker: accepts are single-shot near the limit
///   (see `engine::admission`);
/// - blocking: an acceptor thread blocked in `accept` when others fill the process, one per
///   listener;
/// - epoll: none, since a worker takes its slot before it calls `accept`.
pub fn overshoot(engine: EngineKind, workers: u64, listeners: u64) -> u64 {
    match engine {
        EngineKind::Uring => workers.saturating_mul(listeners),
        EngineKind::Blocking => listeners,
        EngineKind::Epoll => 0,
    }
}

/// Where the process-wide limit came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitOrigin {
    /// `max_connections` (or `--max-connections`), as written.
    Configured,
    /// Derived from `RLIMIT_NOFILE`, as HAProxy does without `maxconn`.
    FdLimit,
    /// The workers' slot tables (`workers × tuning.max_connections`) are smaller than what
    /// was configured or derived.
    WorkerTables,
}

/// The process-wide connection limit and the descriptors behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimit {
    /// Connections open at once in the whole process, every worker together.
    pub max_connections: u32,
    pub origin: LimitOrigin,
    pub budget: FdBudget,
    /// What it was checked against.
    pub fd_limit: FdLimit,
}

impl ConnectionLimit {
    /// Descriptors needed at the limit.
    pub fn fds_needed(&self) -> u64 {
        self.budget.need(self.max_connections.into())
    }
}

/// Why a configuration does not fit `RLIMIT_NOFILE`: the message says by how much and what
/// to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FdShortage(pub String);

const RAISE_HINT: &str = "raise the limit (`ulimit -n` in the shell that starts ringlb, \
                          LimitNOFILE= in a systemd unit)";

/// The process-wide limit for a configuration of `shape`: `configured`, or derived from
/// `fd_limit`; never more than the workers' slot tables hold.
pub fn connection_limit(
    configured: Option<u32>,
    shape: &Shape,
    fd_limit: FdLimit,
) -> Result<ConnectionLimit, FdShortage> {
    let budget = FdBudget::new(shape);
    let tables = shape
        .workers
        .saturating_mul(shape.worker_max_connections)
        .min(MAX_PROCESS_CONNECTIONS.into());
    let (wanted, origin) = match configured {
        Some(n) => (u64::from(n), LimitOrigin::Configured),
        None => (budget.most_connections(fd_limit.soft), LimitOrigin::FdLimit),
    };
    let (value, origin) = if tables < wanted {
        (tables, LimitOrigin::WorkerTables)
    } else {
        (wanted, origin)
    };
    let need = budget.need(value);
    if value == 0 || need > fd_limit.soft {
        let shown = value.max(1);
        let most = budget.most_connections(fd_limit.soft);
        let udp = if shape.udp_sockets == 0 {
            String::new()
        } else {
            format!(
                " ({} of them for UDP listeners and their flows: lower udp_max_flows to \
                 need fewer)",
                shape.udp_sockets
            )
        };
        let what = if most == 0 {
            format!("too low for a single connection; {RAISE_HINT}")
        } else {
            format!("{RAISE_HINT}, or lower max_connections to at most {most}")
        };
        let race = match budget.overshoot {
            0 => String::new(),
            n => format!(" (and {n} more that a race may admit)"),
        };
        return Err(FdShortage(format!(
            "{shown} connections{race} need {} file descriptors: {} per connection and {} for \
             the process, its listeners, rings and pipes{udp}; RLIMIT_NOFILE is {fd_limit}: \
             {what}",
            budget.need(shown),
            budget.per_connection,
            budget.reserve,
        )));
    }
    Ok(ConnectionLimit {
        // `value` ≤ `tables` ≤ MAX_PROCESS_CONNECTIONS, which fits.
        max_connections: u32::try_from(value).unwrap_or(MAX_PROCESS_CONNECTIONS),
        origin,
        budget,
        fd_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(engine: EngineKind, workers: u64, splices: bool) -> Shape {
        Shape {
            engine,
            workers,
            listeners: 2,
            splices,
            pipe_pool: 256,
            worker_max_connections: 65_536,
            udp_sockets: 0,
        }
    }

    fn limit(soft: u64) -> FdLimit {
        FdLimit { soft, hard: soft }
    }

    #[test]
    fn budget_counts_reserve_pipes_and_two_fds_per_connection() {
        let copy = FdBudget::new(&shape(EngineKind::Epoll, 4, false));
        // 32 for the process, 4 workers × (8 + 2 listeners).
        assert_eq!(copy.reserve, 32 + 4 * 10);
        assert_eq!(copy.per_connection, 2);
        assert_eq!(copy.overshoot, 0);
        assert_eq!(copy.need(1000), 72 + 2000);
        // Splicing adds each worker's idle pipes: 4 × 256 pipes × 2 ends.
        let splice = FdBudget::new(&shape(EngineKind::Epoll, 4, true));
        assert_eq!(splice.reserve, 72 + 4 * 256 * 2);
        // io_uring may take one client per listener and worker in a race.
        let uring = FdBudget::new(&shape(EngineKind::Uring, 4, false));
        assert_eq!(uring.overshoot, 8);
        assert_eq!(uring.need(1000), 72 + 2 * 1008);
        assert_eq!(
            FdBudget::new(&shape(EngineKind::Blocking, 1, false)).overshoot,
            2
        );
    }

    #[test]
    fn most_connections_is_the_inverse_of_need() {
        for engine in [EngineKind::Uring, EngineKind::Epoll, EngineKind::Blocking] {
            for splices in [false, true] {
                let budget = FdBudget::new(&shape(engine, 3, splices));
                for soft in [1024, 4096, 65_535, 1 << 20] {
                    let most = budget.most_connections(soft);
                    // 0 also when not even one fits (the reserve may exceed a small limit).
                    assert!(most == 0 || budget.need(most) <= soft, "{engine:?} {soft}");
                    assert!(budget.need(most + 1) > soft, "{engine:?} {soft}");
                }
                assert_eq!(budget.most_connections(budget.reserve), 0);
                assert_eq!(budget.most_connections(0), 0);
            }
        }
    }

    #[test]
    fn without_a_value_the_limit_comes_from_rlimit_nofile() {
        let s = shape(EngineKind::Epoll, 2, false);
        let got = connection_limit(None, &s, limit(1024)).expect("fits");
        // (1024 − (32 + 2 × 10)) / 2
        assert_eq!(got.max_connections, 486);
        assert_eq!(got.origin, LimitOrigin::FdLimit);
        assert!(got.fds_needed() <= 1024);
        // Unlimited: the slot tables bound it.
        let got = connection_limit(None, &s, FdLimit::UNLIMITED).expect("fits");
        assert_eq!(got.max_connections, 2 * 65_536);
        assert_eq!(got.origin, LimitOrigin::WorkerTables);
    }

    #[test]
    fn a_configured_value_is_kept_when_it_fits_and_capped_by_the_tables() {
        let s = shape(EngineKind::Uring, 2, false);
        let got = connection_limit(Some(100), &s, limit(1024)).expect("fits");
        assert_eq!(
            (got.max_connections, got.origin),
            (100, LimitOrigin::Configured)
        );
        let small = Shape {
            worker_max_connections: 10,
            ..s
        };
        let got = connection_limit(Some(100), &small, limit(1024)).expect("fits");
        assert_eq!(
            (got.max_connections, got.origin),
            (20, LimitOrigin::WorkerTables)
        );
    }

    #[test]
    fn a_configured_value_that_cannot_fit_names_the_numbers_and_the_way_out() {
        let s = shape(EngineKind::Epoll, 2, false);
        let err = connection_limit(Some(100_000), &s, limit(1024)).expect_err("too many");
        let text = err.to_string();
        for part in [
            "100000 connections need 200052 file descriptors",
            "2 per connection and 52 for",
            "RLIMIT_NOFILE is 1024 (hard limit 1024)",
            "ulimit -n",
            "LimitNOFILE=",
            "at most 486",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
    }

    #[test]
    fn udp_flows_are_reserved_per_worker_and_listener() {
        use crate::config::{Pool, UdpFlows, UdpListener};
        let pool = |max_flows| Pool {
            name: "dns".into(),
            algorithm: Default::default(),
            backends: Vec::new(),
            retries: 0,
            health: None,
            slow_start: Default::default(),
            max_fails: 0,
            fail_timeout: Default::default(),
            queue: Default::default(),
            affinity: None,
            udp: UdpFlows {
                max_flows,
                ..UdpFlows::default()
            },
        };
        let pools = [pool(100), pool(1000)];
        let udp = |pool| UdpListener {
            rcvbuf: crate::config::defaults::DEFAULT_UDP_RCVBUF,
            freebind: false,
            name: format!("u{pool}"),
            bind: "127.0.0.1:53".parse().expect("literal"),
            pool,
        };
        // 3 workers × (100 flows + its socket), then × (1000 + 1).
        assert_eq!(udp_sockets(3, &[udp(0)], &pools), 303);
        assert_eq!(udp_sockets(3, &[udp(0), udp(1)], &pools), 303 + 3003);
        let s = shape(EngineKind::Epoll, 3, false);
        let with = s.with_udp(3, &[udp(1)], &pools);
        assert_eq!(
            FdBudget::new(&with).reserve,
            FdBudget::new(&s).reserve + 3003
        );
        let err = connection_limit(None, &with, limit(2048)).expect_err("no room");
        assert!(err.to_string().contains("3003 of them for UDP"), "{err}");
        assert!(err.to_string().contains("udp_max_flows"), "{err}");
    }

    #[test]
    fn a_limit_below_the_reserve_allows_nothing() {
        let s = shape(EngineKind::Epoll, 2, true);
        let err = connection_limit(None, &s, limit(256)).expect_err("no room");
        assert!(
            err.to_string().contains("too low for a single connection"),
            "{err}"
        );
    }
}
