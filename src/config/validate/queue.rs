//! Validation of the keys that make clients wait: a pool's queue (`queue_size`,
//! `queue_timeout`, `queue_close`) and a listener's admission rate (`admission_rate`,
//! `admission_burst`). A backend's `max_connections` is read with its other keys.

use super::super::connection::{Zero, duration};
use super::super::defaults::*;
use super::super::duration::format_duration;
use super::super::limits::*;
use super::super::raw::*;
use super::super::{AdmissionRate, Queue, QueueClose, Source};
use super::{Result, int};

/// The model's close for a written name.
pub(super) fn queue_close(name: QueueCloseName) -> QueueClose {
    match name {
        QueueCloseName::Reset => QueueClose::Reset,
        QueueCloseName::Fin => QueueClose::Fin,
    }
}

/// `queue_size` (0: no queue), `queue_timeout` (above zero, at most
/// [`MAX_QUEUE_TIMEOUT`]) and `queue_close` of pool `p`; `at` turns a key into its field path
/// (`pool[0].KEY`).
pub(super) fn queue(p: &RawPool, at: &dyn Fn(&str) -> String, src: &Source<'_>) -> Result<Queue> {
    let size = int(
        p.queue_size.as_ref(),
        DEFAULT_QUEUE_SIZE,
        0,
        MAX_QUEUE_SIZE.into(),
        &at("queue_size"),
        src,
    )?;
    let timeout = duration(
        p.queue_timeout.as_ref(),
        DEFAULT_QUEUE_TIMEOUT,
        Zero::Refused,
        &at("queue_timeout"),
        src,
    )?;
    if let Some(value) = p
        .queue_timeout
        .as_ref()
        .filter(|_| timeout > MAX_QUEUE_TIMEOUT)
    {
        return Err(src.invalid(
            value.span(),
            at("queue_timeout"),
            format!(
                "must be at most {}, got {:?}",
                format_duration(MAX_QUEUE_TIMEOUT),
                value.get_ref()
            ),
        ));
    }
    let close = p
        .queue_close
        .as_ref()
        .map_or(QueueClose::default(), |c| queue_close(*c.get_ref()));
    Ok(Queue {
        size,
        timeout,
        close,
    })
}

/// Listener `l`'s admission rate, if it has one: `admission_rate` new connections a second,
/// in bursts of `admission_burst` (left out: a tenth of the rate, at least 1). A burst without
/// a rate is an error rather than ignored; `at` turns a key into its field path
/// (`listener[0].KEY`).
pub(super) fn admission(
    l: &RawListener,
    at: &dyn Fn(&str) -> String,
    src: &Source<'_>,
) -> Result<Option<AdmissionRate>> {
    let max = MAX_ADMISSION_RATE.into();
    let Some(rate) = &l.admission_rate else {
        return match &l.admission_burst {
            None => Ok(None),
            Some(burst) => Err(src.invalid(
                burst.span(),
                at("admission_burst"),
                "needs admission_rate: the burst is the size of the rate's bucket, and \
                 without a rate clients are let through as fast as they come",
            )),
        };
    };
    let rate = int(Some(rate), 0u32, 1, max, &at("admission_rate"), src)?;
    let burst = int(
        l.admission_burst.as_ref(),
        default_burst(rate),
        1,
        max,
        &at("admission_burst"),
        src,
    )?;
    Ok(Some(AdmissionRate { rate, burst }))
}

/// `admission_burst` left out: a tenth of a second's worth of clients, at least 1.
fn default_burst(rate: u32) -> u32 {
    (rate / DEFAULT_ADMISSION_BURST_DIVISOR).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_burst_is_a_tenth_of_the_rate_and_never_zero() {
        assert_eq!(default_burst(1), 1);
        assert_eq!(default_burst(19), 1);
        assert_eq!(default_burst(100), 10);
        assert_eq!(default_burst(MAX_ADMISSION_RATE), MAX_ADMISSION_RATE / 10);
    }

    #[test]
    fn the_queue_defaults_pass_their_own_checks() {
        const { assert!(DEFAULT_QUEUE_SIZE <= MAX_QUEUE_SIZE) };
        assert!(!DEFAULT_QUEUE_TIMEOUT.is_zero());
        assert!(DEFAULT_QUEUE_TIMEOUT <= MAX_QUEUE_TIMEOUT);
        assert_eq!(Queue::default().close, queue_close(QueueCloseName::Reset));
    }
}
