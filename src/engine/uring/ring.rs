//! Ring set-up, and the one place that pushes submission entries.

use std::io;
use std::time::Duration;

use io_uring::{IoUring, squeue, types};

use super::probe::Plan;

/// A worker's io_uring instance.
pub struct Ring {
    ring: IoUring,
    /// Entries pushed since the last submit (for statistics).
    pushed: u64,
    /// `io_uring_enter` calls made.
    enters: u64,
    /// Completions reaped early (to relieve a full completion queue), not yet handled.
    backlog: Vec<(u64, i32, u32)>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("pushed", &self.pushed)
            .field("enters", &self.enters)
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
            pushed: 0,
            enters: 0,
            backlog: Vec::new(),
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

    /// Queue `entries` (a chain, when they carry `IO_LINK`) for the next submit. If the queue
    /// lacks room for all of them, what is queued is submitted first: a chain is never split
    /// across two submits, which would cut its links (a connect would lose its timeout).
    /// This is the one function that hands entries to the kernel's queue.
    ///
    /// All or nothing: on an error (the kernel would not take what was queued, so there is
    /// still no room) none of `entries` is queued, and the caller keeps what they point to.
    ///
    /// # Safety
    /// Every fd, buffer, address and timespec that an entry points to must stay valid and must
    /// not be moved, freed or (for buffers the kernel writes) read or written by user space
    /// until the entry's final completion has been reaped (for a multishot entry, the completion
    /// without `IORING_CQE_F_MORE`; for a linked timeout's timespec, until the submit that
    /// carries it has returned).
    pub unsafe fn push_chain(&mut self, entries: &[&squeue::Entry]) -> io::Result<()> {
        if self.room() < entries.len() {
            self.submit_pending()?;
            if self.room() < entries.len() {
                // A chain longer than the whole queue: validation keeps ring_entries at
                // `MIN_RING_ENTRIES` or more, the longest chain queued.
                return Err(io::Error::other("submission queue full"));
            }
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

    /// Free entries in the submission queue.
    fn room(&mut self) -> usize {
        let sq = self.ring.submission();
        sq.capacity() - sq.len()
    }

    /// Hand what is queued to the kernel without waiting. When the completion queue is
    /// overflowing the kernel refuses (`EBUSY`) until completions are reaped: reap them into
    /// the backlog (handled at the start of the next drain) and try again.
    fn submit_pending(&mut self) -> io::Result<()> {
        loop {
            self.enters += 1;
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                    let before = self.backlog.len();
                    let mut cq = self.ring.completion();
                    cq.sync();
                    self.backlog
                        .extend(cq.map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())));
                    if self.backlog.len() == before {
                        return Err(err);
                    }
                }
                Err(err) if err.raw_os_error() == Some(libc::EINTR) => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Submit everything queued and wait for at least one completion or `timeout`: one
    /// `io_uring_enter` per loop turn.
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        self.enters += 1;
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(err)
                if matches!(
                    err.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(err) => Err(err),
        }
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
}
