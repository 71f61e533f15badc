//! The `ringlb` command: `check`, `run`, `doctor`, `demo`, `ctl`. See `ringlb --help`.

mod cli;

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ringlb::config::{self, Config, ConfigError};
use ringlb::control::client::Endpoint;
use ringlb::control::{Control, ReloadSource, handover};
use ringlb::engine::listeners::{Inherited, Sockets};
use ringlb::engine::{inbox, signal};
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, CtlArgs, RunArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's report is its output: engine logs would break it up, so they come only on
    // request. Everything else logs at info by default.
    init_logging(match cli.command {
        Command::Demo(_) => "off",
        // ctl's output and exit status are its answer; its own errors go to stderr anyway.
        Command::Ctl(_) => "warn",
        _ => "info",
    });
    match cli.command {
        Command::Check {
            config: path,
            overrides,
        } => match Config::from_file_with(&path, &overrides.to_overrides()) {
            Ok(config) => {
                let valid = format!("{}: configuration is valid\n", path.display());
                print_out(&(config.summary() + &valid))
            }
            Err(e) => fail(&e),
        },
        Command::Run(args) => run(args),
        Command::Ctl(args) => ctl(&args),
        Command::Doctor => match ringlb::engine::doctor() {
            Ok(report) => print_out(&report),
            Err(e) => fail(&e),
        },
        Command::Demo(args) => {
            let options = ringlb::demo::DemoOptions {
                engine: config::engine_kind(args.engine),
                mode: config::mode(args.mode),
                duration: Duration::from_secs(args.seconds),
                clients: args.clients,
            };
            match ringlb::demo::run(options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    let overrides = args.overrides.to_overrides();
    let loaded: Result<Config, ConfigError> = match (&args.config, &args.listen) {
        (Some(path), _) => Config::from_file_with(path, &overrides),
        (None, Some(listen)) => Config::from_quick(listen, &args.backend, &overrides),
        // clap requires one of the two; this arm only keeps the match total.
        (None, None) => {
            eprintln!("ringlb: run needs --config FILE or --listen ADDR --backend SPEC");
            return ExitCode::from(2);
        }
    };
    let config = match loaded {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    tracing::info!(
        listeners = config.listeners.len(),
        pools = config.pools.len(),
        workers = config.worker_count(),
        "configuration loaded"
    );
    let shutdown = match signal::Shutdown::from_signals() {
        Ok(shutdown) => shutdown,
        Err(e) => {
            eprintln!("ringlb: installing signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (links, inboxes) = match inbox::pairs(ringlb::engine::worker_count(&config)) {
        Ok(pairs) => pairs,
        Err(e) => {
            eprintln!("ringlb: creating the workers' inboxes: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A binary upgrade starts on the running process's listening sockets.
    let (inherited, takeover) = match &args.upgrade_from {
        Some(admin) => match handover::take_over(admin) {
            Ok((inherited, takeover)) => (inherited, Some(takeover)),
            Err(e) => return fail(&e),
        },
        None => (Inherited::new(), None),
    };
    let workers = ringlb::engine::worker_count(&config);
    let sockets = match Sockets::bind(&config, workers, inherited) {
        Ok(sockets) => sockets,
        Err(e) => return fail(&e),
    };
    let mut control = Control::new(&config, links);
    if let Some(path) = &args.config {
        control.reload_from(ReloadSource {
            path: path.clone(),
            overrides,
        });
    }
    let admin = match ringlb::control::server::start(
        &config.admin,
        control,
        shutdown.clone(),
        takeover.is_some(),
    ) {
        Ok(admin) => admin,
        Err(e) => return fail(&e),
    };
    if let Some(takeover) = takeover {
        tell_when_up(takeover, admin.staged(), shutdown.clone());
    }
    let result = ringlb::engine::run_with(config, shutdown, inboxes, sockets);
    admin.stop();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Once every worker is up, move the admin and handover sockets from their `staged` paths to
/// their own and tell the process this one replaces that it can stop (on a thread of its own;
/// a start that fails does neither, and the old process serves on with its sockets).
fn tell_when_up(
    takeover: handover::Takeover,
    staged: Vec<(std::path::PathBuf, std::path::PathBuf)>,
    shutdown: signal::Shutdown,
) {
    let spawned = std::thread::Builder::new()
        .name("ringlb-takeover".into())
        .spawn(move || {
            while !shutdown.is_up() {
                if shutdown.requested() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            for (from, to) in &staged {
                if let Err(e) = std::fs::rename(from, to) {
                    tracing::error!(from = %from.display(), to = %to.display(), "{e}");
                }
            }
            tracing::info!("every worker is up: telling the old process to stop");
            takeover.done();
        });
    if let Err(e) = spawned {
        tracing::warn!("the old process will not be told to stop: {e}");
    }
}

/// `ringlb ctl`: one request to the admin API; exit 0 with the answer on stdout, or 1 with
/// the reason on stderr.
fn ctl(args: &CtlArgs) -> ExitCode {
    let endpoint = match (&args.url, &args.socket) {
        (Some(url), _) => match Endpoint::from_url(url) {
            Ok(endpoint) => endpoint,
            Err(e) => {
                eprintln!("ringlb ctl: {e}");
                return ExitCode::from(2);
            }
        },
        (None, Some(path)) => Endpoint::Unix(path.clone()),
        (None, None) => Endpoint::Unix(config::defaults::DEFAULT_ADMIN_SOCKET.into()),
    };
    let command = args.command.to_command();
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("RINGLB_ADMIN_TOKEN").ok());
    match ringlb::control::ctl::run(&endpoint, token.as_deref(), &command) {
        Ok(text) => print_out(&text),
        Err(reason) => {
            eprintln!("ringlb ctl: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to stdout. A closed stdout (`ringlb check … | head`) is not worth a panic,
/// which is what `print!` would do; the command's work is done either way.
fn print_out(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    ExitCode::SUCCESS
}

/// Prints `error` to stderr; the exit status for any failure. Sources are not chained on:
/// this crate's error messages already include their cause.
fn fail(error: &dyn std::error::Error) -> ExitCode {
    eprintln!("ringlb: {error}");
    ExitCode::FAILURE
}

/// Logs to stderr, filtered by RINGLB_LOG (else `default`); a bad filter is reported and the
/// default used, since logging should never stop the balancer from starting.
fn init_logging(default: &str) {
    let filter = match std::env::var("RINGLB_LOG") {
        Ok(spec) => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("ringlb: ignoring RINGLB_LOG={spec:?}: {e}");
            EnvFilter::new(default)
        }),
        Err(_) => EnvFilter::new(default),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
