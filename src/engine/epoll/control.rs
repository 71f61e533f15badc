//! The epoll worker's side of the control path: the inbox's eventfd registered with epoll (so
//! a message ends the wait), and [`Controlled`] for the shared runtime.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use rustix::event::epoll;

use super::worker::{Accepting, ListenerSlot, Worker};
use super::{TAG_INBOX, TRAITS};
use crate::config::Config;
use crate::core::balance::PoolSnapshot;
use crate::core::slot::UserData;
use crate::engine::EngineError;
use crate::engine::inbox::{Inbox, WorkerReport};
use crate::engine::runtime::{self, Controlled, Logging, Usage};

impl Worker {
    /// Take the worker's inbox and access logging (`shard` was fitted to it) and register the
    /// inbox's eventfd, edge-triggered: every write raises an edge, so the wait ends on each
    /// message whether or not the count was read.
    pub fn attach(mut self, inbox: Inbox, logging: Logging) -> Result<Self, EngineError> {
        self.logging = logging;
        let data = epoll::EventData::new_u64(UserData::internal_indexed(TAG_INBOX, 0).0);
        epoll::add(
            &self.res.epoll,
            inbox.wake_fd(),
            data,
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )
        .map_err(|e| EngineError::io("registering the inbox with epoll", e.into()))?;
        self.inbox = Some(Rc::new(inbox));
        Ok(self)
    }

    /// Once per loop turn, after the wait: apply what the inbox holds. The eventfd's count is
    /// read only when a message came, to keep the counter from ever filling.
    pub(super) fn serve_inbox(&mut self) {
        let Some(inbox) = self.inbox.clone() else {
            return;
        };
        if runtime::apply_inbox(&inbox, self) > 0 {
            inbox.rearm();
        }
    }
}

impl Controlled for Worker {
    fn update_pool(&mut self, pool: usize, snapshot: Arc<PoolSnapshot>) {
        self.udp.update_pool(pool, &snapshot);
        self.shard.update_pool(pool, snapshot);
    }

    fn admit(&mut self, grant: crate::core::capacity::Grant) {
        self.shard.admit(Instant::now(), grant);
    }

    fn set_accepting(&mut self, listener: usize, on: bool) {
        let Some(slot) = self.listeners.get_mut(listener) else {
            return;
        };
        match (on, slot.accepting) {
            (false, Accepting::Disabled) | (true, Accepting::Open) => return,
            (true, Accepting::BackingOff(_) | Accepting::Full) => return,
            (false, _) => slot.accepting = Accepting::Disabled,
            (true, Accepting::Disabled) => {
                // Edge-triggered: clients that queued meanwhile raised no new edge.
                slot.accepting = Accepting::Open;
                self.accept_all(listener, Instant::now());
            }
        }
        runtime::log_accepting(self.index, listener, on);
    }

    fn reconfigure(&mut self, config: &Config) {
        runtime::reconfigure(
            (&mut self.shard, &mut self.udp),
            &mut self.logging,
            config,
            &TRAITS,
        );
    }

    fn add_listener(&mut self, listener: usize, socket: socket2::Socket) {
        if listener != self.listeners.len() || self.shutdown.requested() {
            runtime::log_listener_refused(self.index, listener, self.listeners.len());
            return;
        }
        match ListenerSlot::register(&self.res.epoll, listener, socket) {
            Ok(slot) => {
                self.listeners.push(slot);
                runtime::log_listener(self.index, listener, true);
                // Clients that queued before the registration raised no edge for us.
                self.accept_all(listener, Instant::now());
            }
            Err(err) => {
                tracing::warn!(worker = self.index, listener, %err, "new listener not registered");
                self.listeners.push(ListenerSlot::closed());
            }
        }
    }

    fn close_listener(&mut self, listener: usize) {
        if let Some(slot) = self.listeners.get_mut(listener) {
            slot.close(&self.res.epoll);
            slot.accepting = Accepting::Disabled;
            runtime::log_listener(self.index, listener, false);
        }
    }

    fn listening(&self) -> Vec<(usize, std::os::fd::BorrowedFd<'_>)> {
        if self.shutdown.requested() {
            return Vec::new();
        }
        self.listeners
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| slot.socket().map(|s| (i, s)))
            .collect()
    }

    fn report(&self) -> WorkerReport {
        let usage = Usage {
            loop_turns: self.res.turn,
            buffers_in_use: self.res.buffers.lent() as u64,
            pipes_in_use: self.res.pipes.stats().in_use as u64,
            access_log_dropped: self.logging.dropped(),
        };
        runtime::report(self.index, &self.shard, usage, &self.udp)
    }
}
