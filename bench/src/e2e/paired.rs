//! The targets judged round by round, when the rows ran in turns
//! ([`super::interleave`]): in each round ringlb's figure is divided by the best peer's of the
//! same round, and the target is judged on the median of those ratios. A ratio of two runs a
//! few seconds apart cancels the drift of a shared machine that a ratio of two medians taken
//! minutes apart keeps.

use std::fmt::Write as _;

use super::figures::{machine_per_unit, median};
use super::measure::RunRecord;
use super::proxy::RowKind;
use super::report::Results;
use super::svg::num;
use super::targets::{Goal, Outcome, PEERS, RINGLB_DEFAULT, Target};
use super::workload::Workload;

/// A figure of one run.
type PerRun = fn(Workload, &RunRecord) -> Option<f64>;

/// Round by round, `ours` over the best of `peers` in that round (the lowest, or with
/// `higher` the highest); `None` for a round where ours or every peer is missing, or the best
/// is not above zero.
pub fn round_ratios(
    ours: &[Option<f64>],
    peers: &[Vec<Option<f64>>],
    higher: bool,
) -> Vec<Option<f64>> {
    ours.iter()
        .enumerate()
        .map(|(k, &v)| {
            let best = peers
                .iter()
                .filter_map(|p| p.get(k).copied().flatten())
                .reduce(|a, b| if higher == (b > a) { b } else { a })?;
            (best > 0.0).then_some(v? / best)
        })
        .collect()
}

/// The median of [`round_ratios`] and the rounds it is over.
pub fn paired_ratio(
    ours: &[Option<f64>],
    peers: &[Vec<Option<f64>>],
    higher: bool,
) -> Option<(f64, usize)> {
    let ratios = round_ratios(ours, peers, higher);
    let n = ratios.iter().flatten().count();
    Some((median(ratios)?, n))
}

/// Of the rounds counted in `ratios` ([`round_ratios`]), how many were below 1, and how many
/// there were.
fn rounds_below_one(ratios: &[Option<f64>]) -> (usize, usize) {
    let counted = ratios.iter().flatten();
    (
        counted.clone().filter(|&&r| r < 1.0).count(),
        counted.count(),
    )
}

impl Results {
    /// The paired section (rows in turns): for every workload `direct` ran, each row's
    /// machine overhead over direct against the best peer's of the same round.
    pub(super) fn paired_section(&self, s: &mut String) {
        let mut names: Vec<&str> = Vec::new();
        for r in self.ran() {
            for w in &r.workloads {
                if !names.contains(&w.name.as_str()) {
                    names.push(&w.name);
                }
            }
        }
        let _ = writeln!(
            s,
            "## Round by round\n\nThe rows ran in turns; for each row, its machine CPU over \
             direct divided by the best peer's ({}) in the same round: the median of those \
             ratios, and in how many rounds it was below 1.\n",
            PEERS.map(|p| format!("`{p}`")).join(", ")
        );
        let _ = writeln!(
            s,
            "| workload | row | over direct (median) | ×best peer, paired | rounds below the best peer |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|");
        for w in names {
            let peers: Vec<_> = PEERS
                .iter()
                .filter_map(|p| self.per_run_overhead(p, w))
                .collect();
            for r in self.ran().filter(|r| r.row.kind != RowKind::Direct) {
                let Some(ours) = self.per_run_overhead(r.row.name, w) else {
                    continue;
                };
                let ratios = round_ratios(&ours, &peers, false);
                let Some(ratio) = median(ratios.iter().copied()) else {
                    continue;
                };
                let (below, counted) = rounds_below_one(&ratios);
                let over = median(ours.iter().copied()).map_or_else(|| "n/a".into(), num);
                let _ = writeln!(
                    s,
                    "| {w} | {} | {over} | {}× | {below} of {counted} |",
                    r.row.name,
                    num(ratio)
                );
            }
        }
        s.push('\n');
    }

    /// `row`'s figure `get` in each run of `workload`, in round order; `None` if the row did
    /// not run it or failed it.
    fn per_run(&self, row: &str, workload: &str, get: PerRun) -> Option<Vec<Option<f64>>> {
        let w = self
            .row(row)?
            .workloads
            .iter()
            .find(|w| w.name == workload && w.failure.is_none() && w.skipped.is_none())?;
        Some(w.runs.iter().map(|r| get(w.workload, r)).collect())
    }

    /// `row`'s whole-machine CPU per unit over `direct`'s in the same round, run by run.
    fn per_run_overhead(&self, row: &str, workload: &str) -> Option<Vec<Option<f64>>> {
        let ours = self.per_run(row, workload, machine_per_unit)?;
        let direct = self.per_run("direct", workload, machine_per_unit)?;
        Some(
            ours.iter()
                .enumerate()
                .map(|(k, v)| Some((*v)? - direct.get(k).copied().flatten()?))
                .collect(),
        )
    }

    /// How `t` came out round by round, or `None` when ringlb's row or every peer's lacks
    /// the runs (then the medians judge it).
    pub(super) fn judge_paired(&self, t: &Target) -> Option<Outcome> {
        let w = t.workload;
        let peers = |get: &dyn Fn(&str) -> Option<Vec<Option<f64>>>| -> Vec<Vec<Option<f64>>> {
            PEERS.iter().filter_map(|p| get(p)).collect()
        };
        match t.goal {
            Goal::Overhead { factor } => {
                let ours = self.per_run_overhead(RINGLB_DEFAULT, w)?;
                let theirs = peers(&|p| self.per_run_overhead(p, w));
                let (ratio, rounds) = paired_ratio(&ours, &theirs, false)?;
                let shown = format!(
                    "{}× the best peer of each round (median of {rounds} rounds)",
                    num(ratio)
                );
                Some(if ratio <= factor {
                    Outcome::Met(shown)
                } else {
                    Outcome::Missed(shown)
                })
            }
            Goal::RateAtCpu { factor } => {
                let rps: PerRun = |_, r| Some(r.load.requests_per_sec);
                let ours_rate = self.per_run(RINGLB_DEFAULT, w, rps)?;
                let ours_cpu = self.per_run(RINGLB_DEFAULT, w, machine_per_unit)?;
                let (rate, rounds) =
                    paired_ratio(&ours_rate, &peers(&|p| self.per_run(p, w, rps)), true)?;
                let (cpu, _) = paired_ratio(
                    &ours_cpu,
                    &peers(&|p| self.per_run(p, w, machine_per_unit)),
                    false,
                )?;
                let shown = format!(
                    "{}× the fastest peer's req/s at {}× the thriftiest's machine CPU/request \
                     (medians of {rounds} rounds)",
                    num(rate),
                    num(cpu)
                );
                Some(if rate >= factor && cpu <= 1.0 {
                    Outcome::Met(shown)
                } else {
                    Outcome::Missed(shown)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_taken_round_by_round_against_that_rounds_best() {
        // Round 1: best peer 2.0 (ours 1.0: 0.5); round 2: 4.0 (ours 2.0: 0.5); round 3:
        // best 1.0 (ours 3.0: 3.0). Median 0.5 although the medians (2.0 vs 2.0) tie.
        let ours = [Some(1.0), Some(2.0), Some(3.0)];
        let peers = vec![
            vec![Some(2.0), Some(4.0), Some(1.0)],
            vec![Some(3.0), None, Some(9.0)],
        ];
        assert_eq!(paired_ratio(&ours, &peers, false), Some((0.5, 3)));
        // Highest is best: round 1 3.0, round 2 4.0, round 3 9.0.
        let (r, n) = paired_ratio(&ours, &peers, true).unwrap();
        assert_eq!(n, 3);
        assert!((r - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn rounds_below_the_best_peer_are_counted_where_both_were_measured() {
        let ours = [Some(0.5), Some(1.5), None, Some(0.9)];
        let peers = vec![
            vec![Some(1.0), Some(1.0), Some(1.0), Some(2.0)],
            vec![Some(2.0), None, Some(1.0), Some(1.0)],
        ];
        // Round 1: 0.5 < 1.0; round 2: 1.5 > 1.0; round 3 not measured; round 4: 0.9 < 1.0.
        assert_eq!(
            rounds_below_one(&round_ratios(&ours, &peers, false)),
            (2, 3)
        );
    }

    #[test]
    fn rounds_without_both_sides_or_with_no_positive_best_do_not_count() {
        let ours = [Some(1.0), None, Some(1.0), Some(1.0)];
        let peers = vec![vec![Some(2.0), Some(2.0), None, Some(-0.5)]];
        assert_eq!(paired_ratio(&ours, &peers, false), Some((0.5, 1)));
        assert_eq!(paired_ratio(&[None], &peers, false), None);
        assert_eq!(paired_ratio(&ours, &[], false), None);
    }
}
