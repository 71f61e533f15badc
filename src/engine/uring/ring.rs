//! Ring set-up, and the one place that pushes submission entries.
//!
//! Every `io_uring_enter` error is classified once, by [`Refusal::of`]: a signal or the wait's
//! timeout is no error; `EBUSY` means completions must be reaped first; `EAGAIN` and `ENOMEM`
//! mean the kernel is short of memory for requests now, so entries wait in user space
//! ([`Ring::held`]) and the worker backs off; anything else (`EBADR` included: the kernel dropped
//! completions, so the worker's account of what is in flight is lost) stops the worker.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use io_uring::{IoUring, squeue, types};

use super::probe::Plan;

/// First pause after the kernel refused a submission for lack of memory.
const BACKOFF_MIN: Duration = Duration::from_millis(1);
/// Longest pause; it doubles from [`BACKOFF_MIN`] while refusals go on.
const BACKOFF_MAX: Duration = Duration::from_millis(64);

/// What an `io_uring_enter` error means for the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// `EINTR` (a signal) or `ETIME` (the wait's own timeout): nothing is wrong.
    Interrupted,
    /// `EBUSY`: the completion queue and its overflow list are full; reap, then submit.
    ReapFirst,
    /// `EAGAIN`, `ENOMEM`: no memory for requests now; the same submission may work later.
    Later,
    /// Anything else: the ring cannot be used as it is.
    Fatal,
}

impl Refusal {
    fn of(err: &io::Error) -> Refusal {
        match err.raw_os_error() {
            Some(libc::EINTR | libc::ETIME) => Refusal::Interrupted,
            Some(libc::EBUSY) => Refusal::ReapFirst,
            Some(libc::EAGAIN | libc::ENOMEM) => Refusal::Later,
            _ => Refusal::Fatal,
        }
    }
}

/// Whether a submit without waiting handed entries over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Submitted {
    /// The kernel took entries (perhaps not all: the rest stay in the queue).
    Some,
    /// The kernel took nothing and said "later".
    Refused,
}

/// A worker's io_uring instance.
pub struct Ring {
    ring: IoUring,
    /// Chains the queue had no room for while the kernel refused to take entries, in order.
    /// They go to the queue before anything newer (see [`Ring::push_chain`]).
    held: VecDeque<Vec<squeue::Entry>>,
    /// Entries pushed since the last submit (for statistics).
    pushed: u64,
    /// `io_uring_enter` calls made.
    enters: u64,
    /// Enters the kernel refused with `EAGAIN`/`ENOMEM`.
    refused: u64,
    /// The pause after the next refusal.
    backoff: Duration,
    /// Completions reaped early (to relieve a full completion queue), not yet handled.
    backlog: Vec<(u64, i32, u32)>,
    /// Errors to return instead of entering the kernel, first first (tests only).
    #[cfg(test)]
    faults: VecDeque<i32>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("pushed", &self.pushed)
            .field("enters", &self.enters)
            .field("refused", &self.refused)
            .field("held", &self.held.len())
            .finish()
    }
}

impl Ring {
    /// A ring of `entries` submission slots, with the task-run mode the plan allows, and io-wq
    /// capped at `iowq_max_workers` threads of each kind.
    pub fn new(entries: u32, plan: &Plan, iowq_max_workers: u32) -> io::Result<Ring> {
        let mut builder = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder();
        // Multishot operations post many completions per submission: give the CQ four times
        // the SQ's entries (liburing's default is twice).
        builder.setup_cqsize(entries.saturating_mul(4));
        if plan.defer_taskrun {
            // Task work runs only when this thread enters the kernel to wait: completions are
            // processed in batches, on this core, without interrupting user space.
            builder.setup_single_issuer().setup_defer_taskrun();
        } else if plan.coop_taskrun {
            builder.setup_coop_taskrun();
        }
        let ring = builder.build(entries)?;
        // A blocking splice or any punted request parks an io-wq thread; cap how many can
        // exist so that 1,000 streaming connections cannot spawn 1,000 threads.
        let mut max = [iowq_max_workers, iowq_max_workers];
        if let Err(err) = ring.submitter().register_iowq_max_workers(&mut max) {
            tracing::warn!(%err, "could not cap io-wq workers");
        }
        Ok(Ring {
            ring,
            held: VecDeque::new(),
            pushed: 0,
            enters: 0,
            refused: 0,
            backoff: BACKOFF_MIN,
            backlog: Vec::new(),
            #[cfg(test)]
            faults: VecDeque::new(),
        })
    }

    /// The io_uring instance (for registering buffers).
    pub fn raw(&self) -> &IoUring {
        &self.ring
    }

    /// Queue `entry` for the next submit (see [`Ring::push_chain`], which it calls).
    ///
    /// # Safety
    /// As for [`Ring::push_chain`].
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: the caller upholds `push_chain`'s contract for this one entry.
        unsafe { self.push_chain(&[entry]) }
    }

    /// Queue `entries` (a chain, when they carry `IO_LINK`) for a coming submit. If the queue
    /// lacks room for all of them, what is queued is submitted first: a chain is never split
    /// across two submits, which would cut its links (a connect would lose its timeout). When
    /// the kernel will not take entries now (`EAGAIN`, `ENOMEM`, or a full completion queue
    /// with nothing to reap), the chain is held in user space and goes to the kernel, in
    /// order, at a coming [`Ring::submit_and_wait`]. This is the one function that hands
    /// entries to the kernel's queue.
    ///
    /// All or nothing: on an error (a chain longer than the queue, or an error that stops the
    /// worker) none of `entries` is queued or held, and the caller keeps what they point to.
    ///
    /// # Safety
    /// Every fd, buffer, address and timespec that an entry points to must stay valid and must
    /// not be moved, freed or (for buffers the kernel writes) read or written by user space
    /// until the entry's final completion has been reaped (for a multishot entry, the completion
    /// without `IORING_CQE_F_MORE`; for a linked timeout's timespec, until the submit that
    /// carries it has returned), or until the ring is dropped if that completion never comes
    /// (a held entry the kernel never saw has none).
    pub unsafe fn push_chain(&mut self, entries: &[&squeue::Entry]) -> io::Result<()> {
        if entries.len() > self.capacity() {
            // Validation keeps ring_entries at `MIN_RING_ENTRIES` or more, the longest chain
            // queued: not reachable from a valid configuration.
            return Err(io::Error::other("a chain longer than the submission queue"));
        }
        if self.held.is_empty() && self.room() < entries.len() {
            self.submit_pending()?;
        }
        if !self.held.is_empty() || self.room() < entries.len() {
            // Behind what is held, or no room: held, in order.
            self.held
                .push_back(entries.iter().map(|&entry| entry.clone()).collect());
            return Ok(());
        }
        for entry in entries {
            // SAFETY: the caller upholds the entry's validity contract stated above.
            if unsafe { self.ring.submission().push(entry) }.is_err() {
                // Room for every entry was checked above, on this thread, the queue's only
                // producer: not reachable.
                return Err(io::Error::other("submission queue full"));
            }
            self.pushed += 1;
        }
        Ok(())
    }

    /// Submission queue entries.
    fn capacity(&mut self) -> usize {
        self.ring.submission().capacity()
    }

    /// Free entries in the submission queue.
    fn room(&mut self) -> usize {
        let sq = self.ring.submission();
        sq.capacity() - sq.len()
    }

    /// Move held chains to the queue, oldest first, while whole chains fit. Returns whether
    /// any remain held.
    fn release_held(&mut self) -> bool {
        while let Some(chain) = self.held.front() {
            let mut sq = self.ring.submission();
            if sq.capacity() - sq.len() < chain.len() {
                return true;
            }
            // SAFETY: the entries were given to `push_chain`, whose caller guaranteed that
            // what they point to stays valid until their final completions.
            if unsafe { sq.push_multiple(chain) }.is_err() {
                // All or nothing, and room was checked above: not reachable.
                return true;
            }
            self.pushed += chain.len() as u64;
            self.held.pop_front();
        }
        false
    }

    /// One `io_uring_enter`, or the next injected fault (tests).
    fn enter(&mut self, wait: Option<&types::Timespec>) -> io::Result<usize> {
        self.enters += 1;
        #[cfg(test)]
        if let Some(errno) = self.faults.pop_front() {
            return Err(io::Error::from_raw_os_error(errno));
        }
        match wait {
            Some(ts) => {
                let args = types::SubmitArgs::new().timespec(ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit(),
        }
    }

    /// Hand what is queued to the kernel without waiting. When the completion queue is
    /// overflowing the kernel refuses (`EBUSY`) until completions are reaped: reap them into
    /// the backlog (handled at the start of the next drain) and try again.
    fn submit_pending(&mut self) -> io::Result<Submitted> {
        loop {
            let err = match self.enter(None) {
                Ok(_) => return Ok(Submitted::Some),
                Err(err) => err,
            };
            match Refusal::of(&err) {
                Refusal::Interrupted => {}
                Refusal::ReapFirst => {
                    let before = self.backlog.len();
                    let mut cq = self.ring.completion();
                    cq.sync();
                    self.backlog
                        .extend(cq.map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())));
                    if self.backlog.len() == before {
                        return Ok(Submitted::Refused);
                    }
                }
                Refusal::Later => {
                    self.refused += 1;
                    return Ok(Submitted::Refused);
                }
                Refusal::Fatal => return Err(err),
            }
        }
    }

    /// Submit everything queued (held chains first moved to the queue) and wait for at least
    /// one completion or `timeout`: one `io_uring_enter` per loop turn, more only while chains
    /// are held. When the kernel refuses for lack of memory, the worker pauses (1 ms, doubling
    /// up to 64 ms while it goes on) and tries again at its next turn; an error this returns
    /// stops the worker.
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        while self.release_held() {
            let room = self.room();
            if self.submit_pending()? == Submitted::Refused || self.room() == room {
                self.back_off();
                return Ok(());
            }
        }
        let ts = types::Timespec::from(timeout);
        let err = match self.enter(Some(&ts)) {
            Ok(_) => {
                self.backoff = BACKOFF_MIN;
                return Ok(());
            }
            Err(err) => err,
        };
        match Refusal::of(&err) {
            // The loop reaps next, which is what a full completion queue needs.
            Refusal::Interrupted | Refusal::ReapFirst => Ok(()),
            Refusal::Later => {
                self.refused += 1;
                self.back_off();
                Ok(())
            }
            Refusal::Fatal => Err(err),
        }
    }

    /// Pause after a refusal for lack of memory; logged at 1, 2, 4, … refusals.
    fn back_off(&mut self) {
        if self.refused.is_power_of_two() {
            tracing::warn!(
                refused = self.refused,
                held = self.held.len(),
                pause = ?self.backoff,
                "the kernel refused submissions (no memory for requests); backing off"
            );
        }
        std::thread::sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Reap every completion that has arrived.
    pub fn drain(&mut self, out: &mut Vec<(u64, i32, u32)>) {
        out.append(&mut self.backlog);
        let mut cq = self.ring.completion();
        cq.sync();
        out.extend(cq.map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())));
    }

    /// `io_uring_enter` calls so far.
    pub fn enters(&self) -> u64 {
        self.enters
    }

    /// Enters the kernel refused for lack of memory so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests;
