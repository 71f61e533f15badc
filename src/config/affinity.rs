//! Which CPUs this process may run on, for `workers = "auto"` and for pinning.
//!
//! The mask comes from `sched_getaffinity(2)` through [`core_affinity::get_core_ids`], which on
//! Linux returns the CPU ids set in the calling thread's mask, in ascending order. That is
//! what makes `taskset -c 1 ringlb run …` run one worker, on CPU 1.
//! (`std::thread::available_parallelism` honours the mask too, and cgroup CPU quotas as well,
//! but it gives only a count, not which CPUs; it serves as the fallback.)
//!
//! The mask is per thread, and an engine may pin the calling thread before it asks again, so
//! the first answer is cached for the life of the process: it is read while loading the
//! configuration, before anything is pinned.

use std::sync::OnceLock;

/// The CPU ids in this process's affinity mask, ascending; read once and cached.
///
/// Never empty: if the mask cannot be read, it falls back to CPUs `0..n` with `n` from
/// [`std::thread::available_parallelism`], or to CPU 0 alone.
pub fn available_cpus() -> &'static [usize] {
    static CPUS: OnceLock<Vec<usize>> = OnceLock::new();
    CPUS.get_or_init(read_mask)
}

fn read_mask() -> Vec<usize> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|core| core.id)
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        let count = std::thread::available_parallelism().map_or(1, usize::from);
        cpus = (0..count).collect();
    }
    cpus
}

/// Writes CPU ids compactly, with runs as ranges: `0-3,6,8-9`.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(",")
    }
}
