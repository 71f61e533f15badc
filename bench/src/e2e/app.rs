//! The harness from start to finish: options, build, peers, rows, io-wq check, output files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::child::StopFlag;
use super::error::{BenchError, Result, io_err};
use super::interleave;
use super::measure::Env;
use super::opts::{Options, Plan};
use super::peers::{self, Peers};
use super::proxy::{Ctx, EXTRA_ROWS, ROWS, Row, URING_SPLICE};
use super::report::Results;
use super::runner::Runner;
use super::workload::{CLIENT_WORKLOADS, UDP_WORKLOADS, WORKLOADS, Workload, many_streams};

/// The workspace root (the parent of the bench package).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Removes a scratch directory when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs the harness; returns the number of failed measurements (0: every row forwarded).
pub fn run(opts: &Options) -> Result<usize> {
    if opts.list_rows {
        for r in ROWS {
            println!("{}", r.name);
        }
        for r in EXTRA_ROWS {
            println!("{} (only with --rows)", r.name);
        }
        return Ok(0);
    }
    let mut plan = Plan::from_options(opts).map_err(BenchError::Setup)?;
    let rows = select_rows(opts)?;
    let workloads = select_workloads(opts)?;
    let stop = StopFlag::install()?;
    plan.fd_limit = raise_fd_limit();
    // A proxied idle connection holds two descriptors in the proxy; keep 800 spare (HAProxy's
    // pipes, listeners, rings).
    let fit = (plan.fd_limit.saturating_sub(800) / 2 / 100 * 100) as u32;
    if plan.idle_connections > fit {
        eprintln!(
            "e2e: the open-files limit is {} (raising it needs CAP_SYS_RESOURCE): idle workload \
             uses {fit} connections instead of {}",
            plan.fd_limit, plan.idle_connections
        );
        plan.idle_connections = fit.max(100);
    }
    if opts.install_peers {
        peers::install()?;
    }
    let bin_dir = match &opts.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .map_err(io_err("finding the e2e binary"))?
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    if !opts.no_build {
        build(&bin_dir)?;
    }
    let bin = |name: &str| -> Result<PathBuf> {
        let p = bin_dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(BenchError::Setup(format!(
                "{} not found (build it, or pass --bin-dir)",
                p.display()
            )))
        }
    };
    let (ringlb, loadgen, backend) = (bin("ringlb")?, bin("loadgen")?, bin("backend")?);
    let started = Instant::now();
    let peers = Peers::detect();
    report_peers(&peers);
    let ts = timestamp();
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| workspace_root().join("results").join(&ts));
    let logs = out.join("logs");
    fs::create_dir_all(&logs).map_err(io_err(format!("creating {}", logs.display())))?;
    let tmp = TempDir(std::env::temp_dir().join(format!("ringlb-e2e-{}", std::process::id())));
    fs::create_dir_all(&tmp.0).map_err(io_err("creating a scratch directory"))?;
    let loadavg_before = loadavg();
    eprintln!(
        "e2e: {} rows × {} workloads, {} run(s) of {:.1} s each; load average {loadavg_before}; \
         output in {}",
        rows.len(),
        workloads.len(),
        plan.runs,
        plan.run.as_secs_f64(),
        out.display()
    );
    let runner = Runner {
        env: Env {
            loadgen: &loadgen,
            backend: &backend,
            iperf3: peers.iperf3.as_deref().ok(),
            wrk: peers.wrk.as_deref().ok(),
            nginx: peers.nginx_http.as_deref().ok(),
            perf: peers.perf.as_deref().ok(),
            load_cpus: &opts.load_cpus.0,
            logs: &logs,
            plan: &plan,
            stop: &stop,
        },
        ctx: Ctx {
            ringlb: &ringlb,
            peers: &peers,
            cpus: &opts.proxy_cpus,
            tmp: &tmp.0,
            logs: &logs,
            stop: &stop,
            fd_limit: plan.fd_limit,
        },
    };
    let results = if opts.interleave {
        interleave::run(&runner, &rows, &workloads)?
    } else {
        let mut results = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let label = format!("[{}/{} {}]", i + 1, rows.len(), row.name);
            results.push(runner.run_row(*row, &workloads, &label)?);
        }
        results
    };
    // A TCP check: not run when only UDP workloads were asked for.
    let tcp = workloads.iter().any(|w| !w.is_udp());
    let iowq = match rows.iter().find(|r| r.name == URING_SPLICE) {
        Some(row) if plan.iowq_connections > 0 && tcp => {
            let w = many_streams(plan.iowq_connections);
            let r = runner.run_workload(*row, w, 1, "[io-wq check]")?;
            if let Some(f) = &r.failure {
                eprintln!("[io-wq check] FAILED: {f}");
            }
            Some(r)
        }
        _ => None,
    };
    let results = Results {
        started_utc: ts,
        quick: opts.quick,
        plan: plan.clone(),
        proxy_cpus: opts.proxy_cpus.0.clone(),
        load_cpus: opts.load_cpus.0.clone(),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        loadavg_before,
        loadavg_after: loadavg(),
        perf_unavailable: peers.perf.as_ref().err().cloned(),
        interleaved: opts.interleave,
        rows: results,
        iowq,
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    write_outputs(&out, &results)?;
    Ok(results.failures())
}

fn select_rows(opts: &Options) -> Result<Vec<Row>> {
    let Some(names) = &opts.rows else {
        return Ok(ROWS.to_vec());
    };
    let known = || ROWS.iter().chain(EXTRA_ROWS.iter());
    for n in names {
        if !known().any(|r| r.name == n) {
            let all: Vec<&str> = known().map(|r| r.name).collect();
            return Err(BenchError::Setup(format!(
                "unknown row {n:?}; rows: {}",
                all.join(", ")
            )));
        }
    }
    Ok(known()
        .filter(|r| names.iter().any(|n| n == r.name))
        .copied()
        .collect())
}

/// The groups `--workloads` takes besides single names: each stands for all of its list.
const GROUPS: [(&str, &[Workload]); 2] = [("udp", &UDP_WORKLOADS), ("clients", &CLIENT_WORKLOADS)];

/// The workloads named with `--workloads` (in table order), or the standard ones; a group
/// name ([`GROUPS`]) stands for all of its workloads.
fn select_workloads(opts: &Options) -> Result<Vec<Workload>> {
    match &opts.workloads {
        None => Ok(WORKLOADS.to_vec()),
        Some(names) => pick_workloads(names).map_err(BenchError::Setup),
    }
}

/// The workloads `names` (single names and group names) select, in table order.
fn pick_workloads(names: &[String]) -> std::result::Result<Vec<Workload>, String> {
    let known = || {
        WORKLOADS
            .iter()
            .chain(UDP_WORKLOADS.iter())
            .chain(CLIENT_WORKLOADS.iter())
    };
    let group = |n: &str| GROUPS.iter().find(|(g, _)| *g == n).map(|(_, ws)| *ws);
    for n in names {
        if group(n).is_none() && !known().any(|w| w.name() == *n) {
            let all: Vec<String> = known().map(Workload::name).collect();
            return Err(format!(
                "unknown workload {n:?}; workloads: {} (groups: udp, clients)",
                all.join(", ")
            ));
        }
    }
    let grouped: Vec<Workload> = names
        .iter()
        .filter_map(|n| group(n))
        .flatten()
        .copied()
        .collect();
    Ok(known()
        .filter(|w| names.contains(&w.name()) || grouped.contains(w))
        .copied()
        .collect())
}

/// Builds ringlb, loadgen and backend with the profile `bin_dir` belongs to.
fn build(bin_dir: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = workspace_root().join("Cargo.toml");
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["-p", "ringlb", "-p", "ringlb-tools", "--bins"]);
    if bin_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    eprintln!("e2e: building ringlb, loadgen and backend");
    let status = cmd.status().map_err(io_err(format!("running {cargo}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(BenchError::Setup(format!(
            "cargo build failed ({status}); pass --no-build to use the binaries already built"
        )))
    }
}

fn report_peers(p: &Peers) {
    let show = |name: &str, r: std::result::Result<String, &String>| match r {
        Ok(path) => eprintln!("e2e: {name}: {path}"),
        Err(why) => eprintln!("e2e: {name}: unavailable: {why}"),
    };
    show(
        "haproxy",
        p.haproxy.as_ref().map(|x| x.display().to_string()),
    );
    show(
        "nginx",
        p.nginx.as_ref().map(|x| x.path.display().to_string()),
    );
    show(
        "iperf3 (iperf3 workloads)",
        p.iperf3.as_ref().map(|x| x.display().to_string()),
    );
    show(
        "wrk (wrk workloads)",
        p.wrk.as_ref().map(|x| x.display().to_string()),
    );
    show(
        "perf (syscall counts)",
        p.perf.as_ref().map(|x| x.display().to_string()),
    );
}

/// Raises the open-files limit that every child inherits: the hard limit as far as allowed
/// (root with CAP_SYS_RESOURCE), the soft limit to the hard one. Returns the soft limit.
fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let cur = getrlimit(Resource::Nofile);
    let hard = cur.maximum.unwrap_or(1 << 20);
    for n in [1_048_576_u64, 262_144, 131_072, 65_536, hard] {
        let n = if n < hard { hard } else { n };
        let lim = Rlimit {
            current: Some(n),
            maximum: Some(n),
        };
        if setrlimit(Resource::Nofile, lim).is_ok() {
            return n;
        }
    }
    cur.current.unwrap_or(1024)
}

fn loadavg() -> String {
    let s = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The current UTC time as `YYYYMMDD-HHMMSS`.
pub fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Formats seconds since the epoch as `YYYYMMDD-HHMMSS` (UTC).
fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn write_outputs(out: &Path, results: &Results) -> Result<()> {
    let write = |name: &str, text: &str| {
        let p = out.join(name);
        fs::write(&p, text).map_err(io_err(format!("writing {}", p.display())))
    };
    let json = serde_json::to_string_pretty(results)
        .map_err(|e| BenchError::Setup(format!("serialising results: {e}")))?;
    write("results.json", &json)?;
    let md = results.markdown();
    write("results.md", &md)?;
    for (name, svg) in results.charts() {
        write(&name, &svg)?;
    }
    println!("{md}");
    eprintln!(
        "e2e: wrote {}/results.md, results.json and charts (*.svg)",
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_groups() {
        let names = |list: &[&str]| {
            let v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
            pick_workloads(&v).map(|ws| ws.iter().map(Workload::name).collect::<Vec<_>>())
        };
        assert_eq!(
            names(&["clients", "rr-64-paced"]),
            Ok(vec![
                "rr-64-paced".to_string(),
                "iperf3-1".into(),
                "iperf3-4".into(),
                "iperf3-1-paced".into(),
                "wrk-keepalive".into(),
                "wrk-close".into()
            ])
        );
        assert_eq!(names(&["udp"]).map(|v| v.len()), Ok(4));
        assert_eq!(names(&["wrk-close"]), Ok(vec!["wrk-close".to_string()]));
        assert!(names(&["wrk"]).is_err_and(|e| e.contains("clients")));
    }

    #[test]
    fn utc_format() {
        assert_eq!(format_utc(0), "19700101-000000");
        assert_eq!(format_utc(1_700_000_000), "20231114-221320");
        assert_eq!(format_utc(951_782_400), "20000229-000000");
    }
}
