//! A backend's health from its check results: HAProxy's `rise` and `fall`.
//!
//! Call order: one [`Tracker`] per checked backend, starting up (a backend is trusted until
//! checks say otherwise, as HAProxy does); [`Tracker::record`] once per finished check, in
//! the order the checks finished. It answers the new state when this result flips it: `fall`
//! failures in a row take an up backend down, `rise` passes in a row bring a down one up. A
//! result that agrees with the current state resets the run of contrary results, so a backend
//! that flaps every check never changes state (when `rise` and `fall` are above 1).

/// Whether a backend passes its checks, as far as rise and fall have counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
}

/// Rise/fall counting for one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracker {
    state: Health,
    /// Results in a row that disagree with `state`.
    contrary: u32,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new(Health::Up)
    }
}

impl Tracker {
    pub fn new(state: Health) -> Self {
        Tracker { state, contrary: 0 }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// Set the state from elsewhere (passive checks), the count starting over.
    pub fn force(&mut self, state: Health) {
        self.state = state;
        self.contrary = 0;
    }

    /// Count one check that `passed`; the new state if it flipped. `rise` and `fall` below 1
    /// count as 1.
    pub fn record(&mut self, passed: bool, rise: u32, fall: u32) -> Option<Health> {
        let (agrees, needed, flipped) = match self.state {
            Health::Up => (passed, fall.max(1), Health::Down),
            Health::Down => (!passed, rise.max(1), Health::Up),
        };
        if agrees {
            self.contrary = 0;
            return None;
        }
        self.contrary += 1;
        if self.contrary < needed {
            return None;
        }
        self.state = flipped;
        self.contrary = 0;
        Some(flipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_then_rise_exactly() {
        let mut t = Tracker::default();
        assert_eq!(t.record(false, 2, 3), None);
        assert_eq!(t.record(false, 2, 3), None);
        assert_eq!(t.record(false, 2, 3), Some(Health::Down), "third failure");
        assert_eq!(t.record(false, 2, 3), None, "stays down");
        assert_eq!(t.record(true, 2, 3), None);
        assert_eq!(t.record(true, 2, 3), Some(Health::Up), "second pass");
    }

    #[test]
    fn a_flapping_backend_never_changes_state() {
        for start in [Health::Up, Health::Down] {
            let mut t = Tracker::new(start);
            for i in 0..100 {
                assert_eq!(t.record(i % 2 == 0, 3, 3), None, "check {i}");
            }
            assert_eq!(t.state(), start);
        }
    }

    #[test]
    fn an_agreeing_result_restarts_the_count() {
        let mut t = Tracker::default();
        t.record(false, 2, 3);
        t.record(false, 2, 3);
        t.record(true, 2, 3);
        assert_eq!(t.record(false, 2, 3), None);
        assert_eq!(t.record(false, 2, 3), None);
        assert_eq!(t.record(false, 2, 3), Some(Health::Down));
    }

    #[test]
    fn zero_counts_as_one() {
        let mut t = Tracker::default();
        assert_eq!(t.record(false, 0, 0), Some(Health::Down));
        assert_eq!(t.record(true, 0, 0), Some(Health::Up));
    }
}
