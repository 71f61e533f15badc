//! Rows in turns (`--interleave`): for each workload every row's backend and proxy start
//! together, and each round runs every row once, so that run `i` of every row saw the same
//! minutes of a shared machine. Ratios taken round by round ([`super::paired`]) then cancel
//! what the machine's other users did in those minutes, which row after row cannot: on this
//! two-CPU VM a row's medians moved by up to 1.5× between batches run minutes apart.

use std::time::Instant;

use super::error::Result;
use super::proxy::Row;
use super::runner::{OpenWorkload, RowResult, Runner, note_failure};
use super::workload::Workload;

/// The row a round starts with: round `round` of `rows` open rows starts `round` places on,
/// so that no row always runs first (right after the others' idle time) or last.
pub fn round_order(rows: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..rows).map(move |k| (round + k) % rows)
}

/// Runs `workloads` on `rows` in turns; the results are as [`Runner::run_row`]'s, row by row.
pub fn run(runner: &Runner<'_>, rows: &[Row], workloads: &[Workload]) -> Result<Vec<RowResult>> {
    let label = |k: usize| format!("[{}/{} {}]", k + 1, rows.len(), rows[k].name);
    let mut results: Vec<RowResult> = rows
        .iter()
        .enumerate()
        .map(|(k, &row)| {
            let skipped = row.unavailable(runner.ctx.peers);
            if let Some(why) = &skipped {
                eprintln!("{} skipped: {why}", label(k));
            }
            RowResult {
                row,
                skipped,
                workloads: Vec::new(),
            }
        })
        .collect();
    let mut start_failure: Vec<Option<String>> = vec![None; rows.len()];
    let runs = runner.env.plan.runs;
    for &w in workloads {
        let t0 = Instant::now();
        let mut open: Vec<(usize, OpenWorkload)> = Vec::new();
        for (k, &row) in rows.iter().enumerate() {
            if results[k].skipped.is_some() {
                continue;
            }
            if let Some(r) = runner.not_run(row, w, start_failure[k].as_deref(), &label(k)) {
                results[k].workloads.push(r);
                continue;
            }
            match runner.open(row, w, &label(k))? {
                Ok(o) => open.push((k, o)),
                Err(r) => {
                    note_failure(&r, &mut start_failure[k], &label(k));
                    results[k].workloads.push(r);
                }
            }
        }
        for i in 0..runs {
            for j in round_order(open.len(), i) {
                runner.run_next(&mut open[j].1, i, runs)?;
            }
        }
        for (k, o) in open {
            let r = runner.close(o)?;
            note_failure(&r, &mut start_failure[k], &label(k));
            results[k].workloads.push(r);
        }
        eprintln!(
            "[all rows] {} done in {:.1} s",
            w.name(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_runs_every_row_once_from_a_moving_start() {
        let rounds: Vec<Vec<usize>> = (0..4).map(|i| round_order(3, i).collect()).collect();
        assert_eq!(
            rounds,
            [vec![0, 1, 2], vec![1, 2, 0], vec![2, 0, 1], vec![0, 1, 2]]
        );
        assert_eq!(round_order(0, 5).count(), 0);
    }
}
