//! One scenario suite, run against every engine and every mode it supports.
//!
//! Each scenario is a function `fn(&Ctx) -> Outcome` in a module under `tests/scenarios/`; it
//! starts the real `ringlb` binary (quick form, 2 workers, 500 ms connect timeout, 2 s idle
//! timeout, 1 s shutdown grace) in front of in-process backends on loopback and asserts
//! behaviour. [`scenarios!`] lists every scenario once, and [`matrix!`] instantiates that list
//! for every configuration, so `cargo test --test scenarios` shows names such as
//! `uring_splice::half_close_client_first`, and `cargo test --test scenarios uring_copy` runs
//! one configuration.
//!
//! An engine that cannot run here (not built yet, io_uring unavailable) makes its tests pass
//! with a `SKIP <engine>: <reason>` line on stderr, written past libtest's output capture.
//!
//! At most two scenarios run at once (RINGLB_SCENARIO_JOBS changes that), whatever
//! `--test-threads` says, so that a 2-core machine is not overloaded and timing assertions
//! keep their margins. The `ringlb` logs of the last run are kept under
//! `target/tmp/scenarios/<config>-<scenario>-<attempt>.log` (level: RINGLB_SCENARIO_LOG, default
//! info), and a failing test prints the tail of its log.

#[path = "scenarios/affinity.rs"]
mod affinity;
#[path = "scenarios/balance.rs"]
mod balance;
#[path = "scenarios/capacity.rs"]
mod capacity;
#[path = "scenarios/connect.rs"]
mod connect;
#[path = "scenarios/control.rs"]
mod control;
#[path = "scenarios/data.rs"]
mod data;
#[path = "scenarios/failures.rs"]
mod failures;
#[path = "scenarios/fin.rs"]
mod fin;
#[path = "scenarios/foreign.rs"]
mod foreign;
#[path = "scenarios/halfclose.rs"]
mod halfclose;
#[path = "scenarios/harness.rs"]
mod harness;
#[path = "scenarios/health.rs"]
mod health;
#[path = "scenarios/inspect.rs"]
mod inspect;
#[path = "scenarios/interop.rs"]
mod interop;
#[path = "scenarios/keepalive.rs"]
mod keepalive;
#[path = "scenarios/lifecycle.rs"]
mod lifecycle;
#[path = "scenarios/limits.rs"]
mod limits;
#[path = "scenarios/load.rs"]
mod load;
#[path = "scenarios/observe.rs"]
mod observe;
#[path = "scenarios/peer.rs"]
mod peer;
#[path = "scenarios/pipes.rs"]
mod pipes;
#[path = "scenarios/proxy.rs"]
mod proxy;
#[path = "scenarios/starvation.rs"]
mod starvation;
#[path = "scenarios/timeouts.rs"]
mod timeouts;
#[path = "scenarios/udp.rs"]
mod udp;
#[path = "scenarios/udp_proxy.rs"]
mod udp_proxy;
#[path = "scenarios/upgrade.rs"]
mod upgrade;

use harness::Setup;

/// One `#[test]` per scenario for the configuration `$config` (a module name) and `$setup`.
/// Add a scenario here once and it runs in every configuration.
macro_rules! scenarios {
    ($config:ident, $setup:expr) => {
        scenarios!(@each $config, $setup;
            exact_bytes => crate::data::exact_bytes,
            slow_peers => crate::data::slow_peers,
            half_close_client_first => crate::halfclose::half_close_client_first,
            half_close_backend_first => crate::halfclose::half_close_backend_first,
            urgent_data_mid_stream => crate::halfclose::urgent_data_mid_stream,
            urgent_data_small_pipe => crate::halfclose::urgent_data_small_pipe,
            client_reset => crate::failures::client_reset,
            backend_reset => crate::failures::backend_reset,
            refused_connect_retried => crate::connect::refused_connect_retried,
            all_backends_refused => crate::connect::all_backends_refused,
            blackholed_backends => crate::connect::blackholed_backends,
            idle_timeout => crate::timeouts::idle_timeout,
            stalled_proxy_keeps_busy_connections => crate::timeouts::stalled_proxy_keeps_busy_connections,
            client_fin_timeout => crate::fin::client_fin_timeout,
            server_fin_timeout => crate::fin::server_fin_timeout,
            half_closed_traffic_outlives_client_fin => crate::fin::half_closed_traffic_outlives_client_fin,
            keepalive_on_both_sides => crate::keepalive::keepalive_on_both_sides,
            many_concurrent => crate::load::many_concurrent,
            pipes_bounded_directions_copy => crate::pipes::pipes_bounded_directions_copy,
            smallest_ring => crate::load::smallest_ring,
            no_fd_leak => crate::load::no_fd_leak,
            no_fd_leak_failure_paths => crate::load::no_fd_leak_failure_paths,
            max_connections_holds_clients_in_the_backlog => crate::limits::max_connections_holds_clients_in_the_backlog,
            graceful_shutdown => crate::lifecycle::graceful_shutdown,
            sighup_and_usr_signals_do_not_stop => crate::lifecycle::sighup_and_usr_signals_do_not_stop,
            sigquit_drains_gracefully => crate::lifecycle::sigquit_drains_gracefully,
            second_term_stops_at_once => crate::lifecycle::second_term_stops_at_once,
            worker_pinning => crate::lifecycle::worker_pinning,
            round_robin_balance => crate::balance::round_robin_balance,
            source_hash_is_sticky => crate::balance::source_hash_is_sticky,
            foreign_backends_concurrent => crate::foreign::foreign_backends_concurrent,
            non_readers_400_do_not_starve_others => crate::starvation::non_readers_400_do_not_starve_others,
            non_readers_1500_do_not_starve_others => crate::starvation::non_readers_1500_do_not_starve_others,
            trickling_non_readers_do_not_starve_others => crate::starvation::trickling_non_readers_do_not_starve_others,
            access_log_lines_and_rotation => crate::observe::access_log_lines_and_rotation,
            drain_through_the_api => crate::control::drain_through_the_api,
            reload_under_load => crate::control::reload_under_load,
            reload_adds_and_removes_listeners => crate::control::reload_adds_and_removes_listeners,
            binary_upgrade_under_load => crate::upgrade::binary_upgrade_under_load,
            reloads_and_upgrades_under_loadgen => crate::upgrade::reloads_and_upgrades_under_loadgen,
            failed_upgrade_leaves_the_old_process_whole => crate::upgrade::failed_upgrade_leaves_the_old_process_whole,
            tcp_checks_follow_dead_and_blackholed_backends => crate::health::tcp_checks_follow_dead_and_blackholed_backends,
            http_checks_on_their_own_port => crate::health::http_checks_on_their_own_port,
            passive_checks_and_slow_start => crate::health::passive_checks_and_slow_start,
            send_expect_checks_follow_the_answer => crate::health::send_expect_checks_follow_the_answer,
            backend_limits_hold_under_a_thousand_clients => crate::capacity::backend_limits_hold_under_a_thousand_clients,
            queue_serves_clients_in_arrival_order => crate::capacity::queue_serves_clients_in_arrival_order,
            queue_overflow_and_timeout_close_promptly => crate::capacity::queue_overflow_and_timeout_close_promptly,
            admission_rate_paces_a_flash_crowd => crate::capacity::admission_rate_paces_a_flash_crowd,
            affinity_survives_scale_out_and_expires => crate::affinity::affinity_survives_scale_out_and_expires,
            send_proxy_tells_backends_the_client => crate::proxy::send_proxy_tells_backends_the_client,
            nginx_reads_the_proxy_header => crate::proxy::nginx_reads_the_proxy_header,
            accept_proxy_takes_the_client_from_the_header => crate::inspect::accept_proxy_takes_the_client_from_the_header,
            sni_routes_pick_the_pool => crate::inspect::sni_routes_pick_the_pool,
            inspect_timeout_falls_back_or_closes => crate::inspect::inspect_timeout_falls_back_or_closes,
            haproxy_and_ringlb_pass_the_client_along => crate::interop::haproxy_and_ringlb_pass_the_client_along,
            openssl_clients_reach_the_backend_of_their_name => crate::interop::openssl_clients_reach_the_backend_of_their_name,
            dig_resolves_through_ringlb => crate::interop::dig_resolves_through_ringlb,
            udp_flows_carry_exact_datagrams => crate::udp::udp_flows_carry_exact_datagrams,
            udp_flows_expire_and_end_after_responses => crate::udp::udp_flows_expire_and_end_after_responses,
            udp_refused_flows_move_to_another_backend => crate::udp::udp_refused_flows_move_to_another_backend,
            udp_reload_and_counters => crate::udp::udp_reload_and_counters,
            udp_flood_keeps_the_flow_table_bounded => crate::udp::udp_flood_keeps_the_flow_table_bounded,
            udp_wildcard_listener_answers_from_the_address_written_to => crate::udp::udp_wildcard_listener_answers_from_the_address_written_to,
            udp_coalesced_datagrams_stay_apart => crate::udp::udp_coalesced_datagrams_stay_apart,
            udp_send_proxy_v2_heads_every_datagram => crate::udp_proxy::udp_send_proxy_v2_heads_every_datagram,
        );
    };
    (@each $config:ident, $setup:expr; $($name:ident => $scenario:path,)*) => {
        $(
            #[test]
            fn $name() {
                crate::harness::run(
                    &$setup,
                    stringify!($config),
                    stringify!($name),
                    $scenario,
                );
            }
        )*
    };
}

/// A module of scenario tests per configuration.
macro_rules! matrix {
    ($($config:ident => $setup:expr,)*) => {
        $(
            mod $config {
                use super::Setup;
                scenarios!($config, $setup);
            }
        )*
    };
}

matrix! {
    uring_copy => Setup::new("uring", "copy"),
    uring_splice => Setup::new("uring", "splice"),
    // Auto copies toward loopback peers by default; this one splices them, so that auto's
    // switch to splice and back is exercised.
    uring_auto => Setup::new("uring", "auto").flags(&["--no-loopback-copy"]).heavy(),
    uring_copy_no_multishot =>
        Setup::new("uring", "copy").flags(&["--no-multishot", "--no-hot-buffers"]),
    uring_copy_no_buffer_ring => Setup::new("uring", "copy").flags(&["--no-buffer-ring"]),
    uring_auto_fallbacks => Setup::new("uring", "auto")
        .flags(&["--no-multishot", "--no-buffer-ring", "--no-defer-taskrun"]),
    epoll_copy => Setup::new("epoll", "copy"),
    epoll_splice => Setup::new("epoll", "splice"),
    blocking_copy => Setup::new("blocking", "copy"),
}
