//! Validation of `[tuning]`: sizes and counts of per-worker resources.

use super::super::defaults::*;
use super::super::limits::*;
use super::super::raw::*;
use super::super::size::parse_size;
use super::super::{Source, Tuning};
use super::{Result, int, with_hint};

pub(super) fn size(
    value: Option<&Spanned<RawSize>>,
    default: u32,
    min: u32,
    max: u32,
    field: &str,
    src: &Source<'_>,
) -> Result<u32> {
    let Some(value) = value else {
        return Ok(default);
    };
    let bytes: i128 = match value.get_ref() {
        RawSize::Bytes(n) => i128::from(*n),
        RawSize::Text(t) => parse_size(t)
            .map_err(|e| src.invalid(value.span(), field, e.to_string()))?
            .into(),
    };
    if bytes < i128::from(min) || bytes > i128::from(max) {
        return Err(src.invalid(
            value.span(),
            field,
            format!("must be between {min} and {max} bytes, got {bytes}"),
        ));
    }
    u32::try_from(bytes).map_err(|_| src.invalid(value.span(), field, "too large"))
}

fn power_of_two(
    value: u32,
    raw: Option<&Spanned<i64>>,
    field: &str,
    src: &Source<'_>,
) -> Result<u32> {
    match raw {
        Some(r) if !value.is_power_of_two() => {
            // `value` is at least 1 here (range-checked before), so `below` is too.
            let below = 1u32 << (31 - value.leading_zeros());
            Err(src.invalid(
                r.span(),
                field,
                format!(
                    "must be a power of two such as {below} or {}, got {value}",
                    u64::from(below) * 2
                ),
            ))
        }
        _ => Ok(value),
    }
}

pub(super) fn tuning(raw: &RawTuning, src: &Source<'_>) -> Result<Tuning> {
    let ring_entries = int(
        raw.ring_entries.as_ref(),
        DEFAULT_RING_ENTRIES,
        MIN_RING_ENTRIES.into(),
        MAX_RING_ENTRIES.into(),
        "tuning.ring_entries",
        src,
    )
    .map_err(|e| {
        with_hint(
            e,
            "a connect and its timeout are queued together as 2 entries; \
             32768 is the kernel's IORING_MAX_ENTRIES",
        )
    })?;
    let ring_entries = power_of_two(
        ring_entries,
        raw.ring_entries.as_ref(),
        "tuning.ring_entries",
        src,
    )?;
    let buffer_count = int(
        raw.buffer_count.as_ref(),
        DEFAULT_BUFFER_COUNT,
        1,
        MAX_BUFFER_COUNT.into(),
        "tuning.buffer_count",
        src,
    )?;
    let buffer_count = power_of_two(
        buffer_count,
        raw.buffer_count.as_ref(),
        "tuning.buffer_count",
        src,
    )?;
    let buffer_size = size(
        raw.buffer_size.as_ref(),
        DEFAULT_BUFFER_SIZE,
        1,
        MAX_BUFFER_SIZE,
        "tuning.buffer_size",
        src,
    )?;
    let memory = u64::from(buffer_count) * u64::from(buffer_size);
    if memory > MAX_BUFFER_MEMORY {
        let span = raw
            .buffer_size
            .as_ref()
            .map(Spanned::span)
            .or(raw.buffer_count.as_ref().map(Spanned::span));
        let message = format!(
            "buffer_count × buffer_size is {memory} bytes per worker; at most {MAX_BUFFER_MEMORY} (1 GiB)"
        );
        return Err(match span {
            Some(span) => src.invalid(span, "tuning.buffer_size", message),
            None => src.invalid_here("tuning.buffer_size", message),
        });
    }
    Ok(Tuning {
        ring_entries,
        buffer_count,
        buffer_size,
        pipe_size: size(
            raw.pipe_size.as_ref(),
            DEFAULT_PIPE_SIZE,
            MIN_PIPE_SIZE,
            MAX_PIPE_SIZE,
            "tuning.pipe_size",
            src,
        )?,
        pipe_pool: int(
            raw.pipe_pool.as_ref(),
            DEFAULT_PIPE_POOL,
            0,
            MAX_PIPE_POOL.into(),
            "tuning.pipe_pool",
            src,
        )?,
        max_pipes: int(
            raw.max_pipes.as_ref(),
            DEFAULT_MAX_PIPES,
            0,
            MAX_PIPES.into(),
            "tuning.max_pipes",
            src,
        )?,
        send_rings: int(
            raw.send_rings.as_ref(),
            DEFAULT_SEND_RINGS,
            0,
            MAX_SEND_RINGS.into(),
            "tuning.send_rings",
            src,
        )?,
        iowq_max_workers: int(
            raw.iowq_max_workers.as_ref(),
            DEFAULT_IOWQ_MAX_WORKERS,
            1,
            MAX_IOWQ_WORKERS.into(),
            "tuning.iowq_max_workers",
            src,
        )?,
        max_connections: int(
            raw.max_connections.as_ref(),
            DEFAULT_WORKER_MAX_CONNECTIONS,
            1,
            MAX_WORKER_CONNECTIONS.into(),
            "tuning.max_connections",
            src,
        )?,
    })
}
