//! Binary upgrades (the listening sockets handed to a new process), alone and together with
//! reloads, under load.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use ringlb::control::client::{Endpoint, request};
use ringlb_tools::loadgen::{self, LoadConfig, Mode, Report};

use crate::control::{admin_socket, load, reload_file, stop_load};
use crate::harness::{Ctx, Launch, Outcome, Proxy, echo_backend, join};

/// A file with the admin socket at `socket`, one listener and one pool of one `backend`.
fn one_backend_file(socket: &std::path::Path, backend: SocketAddr) -> String {
    format!(
        "[admin]\nsocket = \"{}\"\n[[listener]]\nbind = \"{{listen}}\"\npool = \"web\"\n\
         [[pool]]\nname = \"web\"\n[[pool.backend]]\naddress = \"{backend}\"\n",
        socket.display()
    )
}

/// The handover test, on every engine: under load (clients with payloads of varied
/// sizes, request rounds on connections renewed every 20 rounds), the binary is upgraded
/// twice (`--upgrade-from`): each new process takes the listening sockets over, and the old
/// one drains and exits 0 by itself. No client is refused or reset, every byte comes back.
pub fn binary_upgrade_under_load(ctx: &Ctx) -> Outcome {
    let echo = echo_backend();
    let socket = admin_socket(ctx);
    let file = one_backend_file(&socket, echo.local_addr());
    let launch = Launch::file(&file).grace(Duration::from_secs(3));
    let mut current = Proxy::start(ctx, &launch)?;
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(current.addr, &stop, 20);
    thread::sleep(Duration::from_millis(300));
    for n in 1..=2 {
        let next = current.successor(ctx, &launch, &socket, n);
        let handed = Instant::now();
        let status = current
            .wait_exit(Duration::from_secs(6))
            .unwrap_or_else(|| panic!("upgrade {n}: the old process is still running"));
        assert!(status.success(), "upgrade {n}: old exit {status}");
        eprintln!(
            "upgrade {n}: the old process left after {:?}",
            handed.elapsed()
        );
        let old = current.log_text();
        assert!(old.contains("listening sockets handed over"), "{old}");
        current = next;
        thread::sleep(Duration::from_millis(300));
    }
    let (clients, rounds) = stop_load(&stop, threads);
    eprintln!("2 upgrades under {clients} clients and {rounds} request rounds");
    let log = current.finish();
    assert!(log.contains("listening sockets taken over"), "{log}");
    Ok(())
}

/// One `loadgen` run at `target`, on a thread of its own.
fn loadgen_thread(target: SocketAddr, mode: Mode, connections: u32) -> thread::JoinHandle<Report> {
    thread::spawn(move || {
        let mut config = LoadConfig::new(target, mode);
        config.connections = connections;
        config.duration = Duration::from_secs(4);
        loadgen::run(&config).expect("loadgen runs")
    })
}

/// The lifecycle test, on every engine: a loadgen connect-rate run and an rr run
/// through ringlb while it is reloaded 20 times (two files that differ in backends and
/// weights) and upgraded twice. Zero failed connects, zero errors or short reads, every
/// response byte as sent. The old processes serve their rr connections to the end (a long
/// grace) and exit 0 once loadgen closes them.
pub fn reloads_and_upgrades_under_loadgen(ctx: &Ctx) -> Outcome {
    let echoes = [echo_backend(), echo_backend(), echo_backend()];
    let addrs = [0, 1, 2].map(|i| echoes[i].local_addr());
    let files = crate::control::reload_files(ctx, &addrs);
    let launch = Launch::file(&files[0]).grace(Duration::from_secs(30));
    let mut current = Proxy::start(ctx, &launch)?;
    let socket = admin_socket(ctx);
    let endpoint = Endpoint::Unix(socket.clone());
    let connects = loadgen_thread(current.addr, Mode::Connect { size: 256 }, 8);
    let rr = loadgen_thread(current.addr, Mode::Rr { size: 64 }, 4);
    let mut retired = Vec::new();
    for i in 1..=20 {
        reload_file(&current, &endpoint, &files[i % 2]);
        if i % 7 == 0 {
            let next = current.successor(ctx, &launch, &socket, (i / 7) as u32);
            retired.push(std::mem::replace(&mut current, next));
        }
        thread::sleep(Duration::from_millis(100));
    }
    let (connects, rr) = (join(connects, "connect load"), join(rr, "rr load"));
    for report in [&connects, &rr] {
        eprintln!(
            "{}: {} requests, {} connections, errors {}/{}/{}/{}/{}",
            report.mode,
            report.requests,
            report.connections_opened,
            report.connect_errors,
            report.io_errors,
            report.short_reads,
            report.verify_errors,
            report.closed_by_peer
        );
        assert!(report.requests > 0, "{report:?}");
        assert_eq!(
            (report.connect_errors, report.io_errors, report.short_reads),
            (0, 0, 0),
            "{}: {report:?}",
            report.mode
        );
        assert_eq!(
            (report.verify_errors, report.closed_by_peer),
            (0, 0),
            "{report:?}"
        );
    }
    for (n, mut old) in retired.into_iter().enumerate() {
        let status = old
            .wait_exit(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("old process {n} still runs after the load ended"));
        assert!(status.success(), "old process {n}: {status}");
    }
    current.finish();
    Ok(())
}

/// An upgrade that fails after taking the sockets over (its access log cannot be opened, once
/// its admin API is up) leaves the old process whole: it still answers on its admin socket,
/// serves clients, and a later upgrade succeeds.
pub fn failed_upgrade_leaves_the_old_process_whole(ctx: &Ctx) -> Outcome {
    let echo = echo_backend();
    let socket = admin_socket(ctx);
    let file = one_backend_file(&socket, echo.local_addr());
    let launch = Launch::file(&file);
    let current = Proxy::start(ctx, &launch)?;
    let bad = current.config_path().with_extension("bad.toml");
    let text = std::fs::read_to_string(current.config_path()).expect("the file");
    std::fs::write(
        &bad,
        format!("[access_log]\npath = \"/nonexistent/ringlb/access.log\"\n{text}"),
    )
    .expect("write");
    let (status, log) = current.failed_successor(ctx, &launch, &socket, &bad);
    assert!(
        !status.success(),
        "the upgrade failed: {status}; log:\n{log}"
    );
    assert!(log.contains("access log"), "{log}");
    let endpoint = Endpoint::Unix(socket.clone());
    let answer = request(&endpoint, None, "GET", "/api/show", None).expect("the old admin API");
    assert_eq!(answer.status, 200);
    let data = crate::harness::payload(10_000, 3);
    assert!(crate::harness::echo_exchange(current.addr, data.clone()) == data);
    let mut current = current;
    let next = current.successor(ctx, &launch, &socket, 1);
    let status = current
        .wait_exit(Duration::from_secs(5))
        .expect("the old process leaves after a good upgrade");
    assert!(status.success(), "{status}");
    let answer = request(&endpoint, None, "GET", "/api/show", None).expect("the new admin API");
    assert_eq!(answer.status, 200);
    next.finish();
    let _ = std::fs::remove_file(&bad);
    Ok(())
}
