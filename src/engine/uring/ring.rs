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
        // Completions never wait for a full CQ on multishot bursts: twice the SQ, as liburing.
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
        })
    }

    /// The io_uring instance (for registering buffers).
    pub fn raw(&self) -> &IoUring {
        &self.ring
    }

    /// Queue `entry` for the next submit, submitting first if the queue is full.
    ///
    /// # Safety
    /// Every fd, buffer, address and timespec that `entry` points to must stay valid and must
    /// not be moved, freed or (for buffers the kernel writes) read or written by user space
    /// until the entry's final completion has been reaped (for a multishot entry, the completion
    /// without `IORING_CQE_F_MORE`; for a linked timeout's timespec, until the submit that
    /// carries it has returned).
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller upholds the entry's validity contract stated above.
            match unsafe { self.ring.submission().push(entry) } {
                Ok(()) => {
                    self.pushed += 1;
                    return Ok(());
                }
                // The queue is full: hand what is queued to the kernel and try again.
                Err(_) => {
                    self.enters += 1;
                    match self.ring.submit() {
                        Ok(_) => {}
                        // The CQ is full: the caller's loop reaps completions on its next turn;
                        // until then nothing more can be queued.
                        Err(err) if err.raw_os_error() == Some(libc::EBUSY) => return Err(err),
                        Err(err) => return Err(err),
                    }
                }
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
        let mut cq = self.ring.completion();
        cq.sync();
        out.extend(cq.map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())));
    }

    /// `io_uring_enter` calls so far.
    pub fn enters(&self) -> u64 {
        self.enters
    }
}
