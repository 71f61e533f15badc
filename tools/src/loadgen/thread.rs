//! One load thread: opens its share of the connections and drives them until done.

use std::collections::VecDeque;
use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use super::client::{self, Client, Step};
use super::pace::Pacer;
use super::report::Tally;
use super::{Common, Mode};
use crate::slab::Slab;

/// Read buffer per thread; also the largest download read.
const SCRATCH: usize = 64 * 1024;

/// Where a thread is in its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Opening and driving connections until the deadline.
    Run,
    /// Idle mode: everything opened; holding until the given instant.
    Hold(Instant),
}

struct LoadThread<'a> {
    common: &'a Common,
    index: u32,
    threads: u32,
    poll: Poll,
    clients: Slab<Client>,
    tally: Tally,
    /// Slots waiting for a connection to be opened.
    to_open: u64,
    /// Connections opened so far by this thread; picks the next source address.
    attempts: u64,
    connecting: u64,
    established: u64,
    /// Paced rr: the thread's share of the rate, counted from `started`.
    pacer: Option<Pacer>,
    /// When the thread started (the pacer's zero).
    started: Instant,
    /// Paced rr: connections ready for their next request, oldest first.
    waiting: VecDeque<usize>,
}

/// Runs thread `index` of `threads` and returns its tally.
pub(crate) fn run_thread(common: &Common, index: u32, threads: u32) -> io::Result<Tally> {
    let total = common.config.connections;
    let share = total / threads + u32::from(index < total % threads);
    let mut t = LoadThread {
        common,
        index,
        threads,
        poll: Poll::new()?,
        clients: Slab::default(),
        tally: Tally::new(),
        to_open: u64::from(share),
        attempts: 0,
        connecting: 0,
        established: 0,
        pacer: (common.config.rate)
            .filter(|_| common.paced())
            .map(|r| Pacer::for_thread(r, threads)),
        started: Instant::now(),
        waiting: VecDeque::new(),
    };
    t.run();
    t.tally.open_at_end = t.established;
    Ok(t.tally)
}

impl LoadThread<'_> {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0u8; SCRATCH];
        let mut phase = Phase::Run;
        loop {
            let now = Instant::now();
            let until = match phase {
                Phase::Run => {
                    if let Mode::Idle { hold } = self.common.config.mode {
                        let opened = self.to_open == 0 && self.connecting == 0;
                        if opened || now >= self.common.deadline {
                            phase = Phase::Hold(now + hold);
                            continue;
                        }
                    } else if now >= self.common.deadline {
                        break;
                    }
                    self.open_pending(now);
                    self.common.deadline
                }
                Phase::Hold(until) => {
                    if now >= until {
                        break;
                    }
                    until
                }
            };
            // Paced rr: start the requests now due (a connection whose budget ran out closes).
            self.release(&mut scratch);
            // Nothing open and nothing left to open (idle mode has moved to Hold by now).
            if self.clients.len() == 0 && self.to_open == 0 {
                break;
            }
            // Never sleep past the deadline; wake often enough to retry queued connects, and
            // when the next paced request is due.
            let mut timeout = until.saturating_duration_since(now);
            if self.to_open > 0 {
                timeout = timeout.min(Duration::from_millis(10));
            }
            if let (Some(p), false) = (&self.pacer, self.waiting.is_empty()) {
                timeout = timeout.min(p.next_due().saturating_sub(self.started.elapsed()));
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            for ev in events.iter() {
                // Errors and hang-ups count as both: the next read or write reports them.
                let hup = ev.is_error() || ev.is_read_closed() || ev.is_write_closed();
                let readiness = (ev.is_readable(), ev.is_writable() || hup, hup);
                self.on_event(ev.token().0, readiness, &mut scratch);
            }
        }
        // Close everything; `established` is left untouched so that the tally reports how
        // many connections were still open when the run ended.
        for i in self.clients.keys() {
            if let Some(mut c) = self.clients.remove(i) {
                let _ = self.poll.registry().deregister(&mut c.stream);
            }
        }
    }

    /// Handles an event; `readiness` is (readable, writable, hung up or errored).
    fn on_event(&mut self, i: usize, readiness: (bool, bool, bool), scratch: &mut [u8]) {
        let (readable, writable, hup) = readiness;
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        let was_open = c.is_open();
        let step = c.on_event(
            readable,
            writable,
            hup,
            self.common,
            &mut self.tally,
            scratch,
        );
        let now_open = c.is_open();
        if !was_open && now_open {
            self.connecting -= 1;
            self.established += 1;
            self.tally.open_peak = self.tally.open_peak.max(self.established);
        }
        self.after_step(i, step);
    }

    /// Paced rr: starts the next request of waiting connections while the pacer has tokens.
    fn release(&mut self, scratch: &mut [u8]) {
        let Some(pacer) = self.pacer.as_mut() else {
            return;
        };
        let mut ready = Vec::new();
        while !self.waiting.is_empty() && pacer.try_take(self.started.elapsed()) {
            ready.extend(self.waiting.pop_front());
        }
        for i in ready {
            if let Some(c) = self.clients.get_mut(i) {
                let step = c.resume(self.common, &mut self.tally, scratch);
                self.after_step(i, step);
            }
        }
    }

    /// Acts on what a connection asked for after it was driven.
    fn after_step(&mut self, i: usize, step: Step) {
        match step {
            Step::Continue => {}
            Step::Idle => self.waiting.push_back(i),
            Step::Finished | Step::Reopen => {
                self.waiting.retain(|&k| k != i);
                if let Some(mut c) = self.clients.remove(i) {
                    let _ = self.poll.registry().deregister(&mut c.stream);
                    if c.is_open() {
                        self.established -= 1;
                    } else {
                        self.connecting -= 1;
                    }
                }
                if step == Step::Reopen {
                    self.to_open += 1;
                }
            }
        }
    }

    /// Opens queued connections, keeping at most `max_connecting` handshakes in flight.
    fn open_pending(&mut self, now: Instant) {
        let max = u64::from(self.common.config.max_connecting.max(1));
        let mut failed = 0;
        while self.to_open > 0 && self.connecting < max {
            self.to_open -= 1;
            let connect_mode = matches!(self.common.config.mode, Mode::Connect { .. });
            // Connect mode spends one request per connection, so claim it up front.
            if connect_mode && !self.common.reserve_request() {
                self.to_open = 0;
                break;
            }
            let src = self.next_source();
            let stream = client::connect(self.common.config.target, src);
            let mut stream = match stream {
                Ok(s) => s,
                Err(_) => {
                    self.tally.connect_errors += 1;
                    // A connect-mode slot lives on; retry it on the next pass, not in a spin.
                    if connect_mode {
                        failed += 1;
                    }
                    continue;
                }
            };
            let key = self.clients.vacant_key();
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                self.tally.connect_errors += 1;
                continue;
            }
            let c = Client::new(stream, src, &self.common.config.mode, now);
            self.clients.insert(c);
            self.connecting += 1;
        }
        self.to_open += failed;
    }

    /// Source addresses are handed out round-robin over the global connection order.
    fn next_source(&mut self) -> Option<Ipv4Addr> {
        let range = self.common.config.sources?;
        let global = self.attempts * u64::from(self.threads) + u64::from(self.index);
        self.attempts += 1;
        Some(range.get(global))
    }
}
