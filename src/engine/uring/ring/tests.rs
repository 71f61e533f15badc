//! The ring's handling of the kernel's refusals, with errors injected in place of
//! `io_uring_enter` and real completions otherwise.

use std::time::{Duration, Instant};

use io_uring::{opcode, squeue};

use super::*;

fn plan() -> Plan {
    Plan {
        multishot_accept: false,
        multishot_recv: false,
        buffer_ring: false,
        defer_taskrun: false,
        coop_taskrun: false,
        send_bundle: false,
        inline_splice: false,
        hot_buffers: false,
        inline_shutdown: false,
    }
}

/// A ring of `entries`, or `None` (with the reason printed) where io_uring is unavailable.
fn ring(entries: u32) -> Option<Ring> {
    match Ring::new(entries, &plan(), 1) {
        Ok(ring) => Some(ring),
        Err(err) => {
            eprintln!("SKIP: no io_uring here: {err}");
            None
        }
    }
}

fn nop(user_data: u64) -> squeue::Entry {
    opcode::Nop::new().build().user_data(user_data)
}

/// Enter and reap until `count` completions arrived (or 5 s passed); their user data in order.
fn reap(ring: &mut Ring, count: usize) -> Vec<(u64, i32)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut done = Vec::new();
    let mut seen = Vec::new();
    while seen.len() < count && Instant::now() < deadline {
        ring.submit_and_wait(Duration::from_millis(20))
            .expect("no fatal error");
        ring.drain(&mut done);
        seen.extend(
            done.drain(..)
                .map(|(user_data, result, _)| (user_data, result)),
        );
    }
    seen
}

#[test]
fn refusals_are_classified_once() {
    let of = |errno| Refusal::of(&io::Error::from_raw_os_error(errno));
    assert_eq!(of(libc::EINTR), Refusal::Interrupted);
    assert_eq!(of(libc::ETIME), Refusal::Interrupted);
    assert_eq!(of(libc::EBUSY), Refusal::ReapFirst);
    assert_eq!(of(libc::EAGAIN), Refusal::Later);
    assert_eq!(of(libc::ENOMEM), Refusal::Later);
    assert_eq!(of(libc::EBADR), Refusal::Fatal);
    assert_eq!(of(libc::EBADF), Refusal::Fatal);
    assert_eq!(of(libc::EINVAL), Refusal::Fatal);
}

/// A full queue and a kernel that says "later": entries are held, in order, and none is lost
/// or refused to the caller (who would close a connection for it).
#[test]
fn entries_wait_while_the_kernel_says_later() {
    let Some(mut ring) = ring(2) else { return };
    ring.faults
        .extend([libc::EAGAIN, libc::ENOMEM, libc::EAGAIN]);
    for user_data in 0..8 {
        // SAFETY: a NOP points to nothing.
        unsafe { ring.push(&nop(user_data)) }.expect("held, not refused");
    }
    assert!(!ring.held.is_empty(), "the queue of 2 had no room for 8");
    let seen = reap(&mut ring, 8);
    let order: Vec<u64> = seen.iter().map(|&(user_data, _)| user_data).collect();
    assert_eq!(order, (0..8).collect::<Vec<_>>(), "every entry, in order");
    assert!(seen.iter().all(|&(_, result)| result == 0));
    assert!(ring.held.is_empty());
    assert!(ring.refused() >= 2, "refusals counted: {}", ring.refused());
}

/// A chain held back stays whole: both entries of a linked pair reach the kernel in one
/// submit, so the link holds (the second runs after the first).
#[test]
fn a_held_chain_is_not_split() {
    let Some(mut ring) = ring(2) else { return };
    // SAFETY: NOPs point to nothing.
    unsafe { ring.push(&nop(1)) }.expect("room");
    ring.faults.push_back(libc::EAGAIN);
    let first = nop(2).flags(squeue::Flags::IO_LINK);
    let second = nop(3);
    // SAFETY: as above.
    unsafe { ring.push_chain(&[&first, &second]) }.expect("held");
    assert_eq!(ring.held.len(), 1);
    let seen = reap(&mut ring, 3);
    assert_eq!(seen, vec![(1, 0), (2, 0), (3, 0)]);
}

/// The wait itself refused for lack of memory, or interrupted, is no reason to stop the
/// worker; an error that cannot recover is.
#[test]
fn the_wait_backs_off_and_only_fatal_errors_stop() {
    let Some(mut ring) = ring(4) else { return };
    for errno in [
        libc::EAGAIN,
        libc::ENOMEM,
        libc::EBUSY,
        libc::EINTR,
        libc::ETIME,
    ] {
        ring.faults.push_back(errno);
        ring.submit_and_wait(Duration::ZERO)
            .unwrap_or_else(|err| panic!("errno {errno} stopped the worker: {err}"));
    }
    assert_eq!(ring.refused(), 2);
    ring.faults.push_back(libc::EBADR);
    let err = ring
        .submit_and_wait(Duration::ZERO)
        .expect_err("EBADR stops");
    assert_eq!(err.raw_os_error(), Some(libc::EBADR));
    // And the ring still works afterwards for what the worker does on its way out.
    // SAFETY: a NOP points to nothing.
    unsafe { ring.push(&nop(9)) }.expect("room");
    assert_eq!(reap(&mut ring, 1), vec![(9, 0)]);
}
