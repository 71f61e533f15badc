//! One direction of a connection (client to backend, or back): what it has queued, its
//! receive, how it forwards (copy or splice) and the switch between them, and its end.

use super::{AUTO_SPLICE_FULL_RECEIPTS, Action, ConnParams, Dir, Via};

/// After a direction was refused a pipe `n` times, it needs `AUTO_SPLICE_FULL_RECEIPTS << n`
/// full receipts (`n` capped here: 128 receipts, 2 MiB of 16 KiB buffers) before it asks for
/// one again, so that a worker at its pipe limit is not asked for a pipe every 64 KiB.
const MAX_REFUSAL_BACKOFF: u8 = 5;

/// A change of [`Via`] a direction waits to make until nothing of it is in flight, so that
/// bytes never overtake each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Switch {
    /// None pending.
    Stay,
    /// Bulk data: splice (`auto` mode, or a direction that fell back to copy).
    ToSplice,
    /// No pipe could be had: copy.
    ToCopy,
}

impl Switch {
    fn target(self) -> Option<Via> {
        match self {
            Switch::Stay => None,
            Switch::ToSplice => Some(Via::Splice),
            Switch::ToCopy => Some(Via::Copy),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecvState {
    Idle,
    Armed,
    Cancelling,
}

/// One direction's progress.
#[derive(Clone, Copy, Debug)]
pub(super) struct Flow {
    pub(super) via: Via,
    /// Received and not yet sent.
    queued: u64,
    recv: RecvState,
    sending: bool,
    pub(super) eof: bool,
    pub(super) shut: bool,
    pub(super) forwarded: u64,
    full_streak: u8,
    switch: Switch,
    /// Times this direction was refused a pipe (see [`MAX_REFUSAL_BACKOFF`]).
    splice_refusals: u8,
    /// Auto mode: whether bulk data may switch this direction to splice (not toward a peer
    /// on the loopback with `loopback_copy`).
    pub(super) may_auto_splice: bool,
}

impl Flow {
    pub(super) fn new(via: Via) -> Self {
        Flow {
            via,
            queued: 0,
            recv: RecvState::Idle,
            sending: false,
            eof: false,
            shut: false,
            forwarded: 0,
            full_streak: 0,
            switch: Switch::Stay,
            splice_refusals: 0,
            may_auto_splice: true,
        }
    }

    fn quiescent(&self) -> bool {
        self.queued == 0 && !self.sending && self.recv == RecvState::Idle
    }

    pub(super) fn done(&self) -> bool {
        self.shut && !self.sending
    }

    /// `bytes` arrived (`armed`: the receive stays armed). In `auto` (`may_splice`), a
    /// streak of `full` receipts on a copying direction asks to switch it to splice.
    pub(super) fn received(&mut self, bytes: u64, armed: bool, may_splice: bool, full: bool) {
        self.queued += bytes;
        self.forwarded += bytes;
        self.recv = match (self.recv, armed) {
            (_, false) => RecvState::Idle,
            (RecvState::Cancelling, true) => RecvState::Cancelling,
            (_, true) => RecvState::Armed,
        };
        if may_splice
            && self.may_auto_splice
            && self.via == Via::Copy
            && self.switch == Switch::Stay
        {
            self.full_streak = if full {
                self.full_streak.saturating_add(1)
            } else {
                0
            };
            let backoff = self.splice_refusals.min(MAX_REFUSAL_BACKOFF);
            if self.full_streak >= AUTO_SPLICE_FULL_RECEIPTS << backoff {
                self.switch = Switch::ToSplice;
            }
        }
    }

    /// No pipe could be had: a splicing direction goes back to copy, a copying one stays and
    /// waits longer before it asks again.
    pub(super) fn splice_refused(&mut self) {
        self.recv = RecvState::Idle;
        self.full_streak = 0;
        self.splice_refusals = self.splice_refusals.saturating_add(1);
        self.switch = match self.via {
            Via::Splice => Switch::ToCopy,
            Via::Copy => Switch::Stay,
        };
    }

    /// The receive stopped (cancelled, or a multishot receive ran out).
    pub(super) fn recv_ended(&mut self) {
        self.recv = RecvState::Idle;
    }

    /// The source reached its end.
    pub(super) fn ended(&mut self) {
        self.recv = RecvState::Idle;
        self.eof = true;
    }

    /// `bytes` of the queued ones were sent.
    pub(super) fn sent(&mut self, bytes: u64) {
        // An engine never reports more than it was asked to send; saturate all the same so
        // that a bug there cannot wrap the count.
        self.queued = self.queued.saturating_sub(bytes);
        self.sending = false;
    }

    /// The next action of direction `dir`, if any: send what is queued, switch how it
    /// forwards once nothing is in flight, receive below the high water (unless the inspect
    /// read still has the client: `intake_busy`), stop a receive above it, or shut the sink
    /// down after the end of the source (not when the other direction is `other_done`: the
    /// close that follows sends the same FIN).
    pub(super) fn poll(
        &mut self,
        dir: Dir,
        params: &ConnParams,
        intake_busy: bool,
        other_done: bool,
    ) -> Option<Action> {
        if self.queued > 0 && !self.sending {
            self.sending = true;
            return Some(Action::Send {
                dir,
                via: self.via,
                queued: self.queued,
            });
        }
        if let Some(target) = self.switch.target() {
            // Switch only when nothing is in flight, so bytes never overtake each other.
            if self.recv == RecvState::Armed {
                self.recv = RecvState::Cancelling;
                return Some(Action::CancelRecv { dir });
            }
            if self.quiescent() {
                self.via = target;
                self.switch = Switch::Stay;
            }
        }
        let limit = match self.via {
            Via::Copy => params.copy_high_water,
            Via::Splice => params.splice_capacity,
        };
        let switching = self.switch != Switch::Stay;
        if !self.eof
            && self.recv == RecvState::Idle
            && self.queued < limit
            && !switching
            && !intake_busy
        {
            self.recv = RecvState::Armed;
            return Some(Action::Recv { dir, via: self.via });
        }
        if self.recv == RecvState::Armed && self.queued >= limit {
            // A multishot receive would keep filling buffers behind a slow sink: stop it.
            self.recv = RecvState::Cancelling;
            return Some(Action::CancelRecv { dir });
        }
        if self.eof && self.queued == 0 && !self.sending && !self.shut {
            self.shut = true;
            // The last direction to end needs no half-close of its own: the close that
            // follows at once sends the same FIN (the sink's socket is the other direction's
            // source, read to its end, so nothing unread turns the close into a reset).
            if other_done {
                return None;
            }
            return Some(Action::ShutdownWrite { side: dir.sink() });
        }
        None
    }
}
