//! Which pool a TLS server name goes to: exact names first, then the longest wildcard.

use std::collections::BTreeMap;

/// A listener's SNI routes, each to a target (an index the listener's policy gives meaning).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    exact: BTreeMap<String, usize>,
    /// `(".example.com", target)` for `*.example.com`, longest suffix first.
    wildcards: Vec<(String, usize)>,
}

impl Routes {
    /// Routes from `(sni, target)` pairs: `sni` a lower-case name or `*.domain` (validated by
    /// the configuration); of duplicates, the first stands.
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a str, usize)>) -> Self {
        let mut table = Routes::default();
        for (sni, target) in routes {
            match sni.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') => {
                    if !table.wildcards.iter().any(|(s, _)| s == suffix) {
                        table.wildcards.push((suffix.to_owned(), target));
                    }
                }
                _ => {
                    table.exact.entry(sni.to_owned()).or_insert(target);
                }
            }
        }
        // Stable: of equal lengths, the order written stands (they cannot both match).
        table
            .wildcards
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        table
    }

    /// The target for `name` (lower case, as [`super::hello::normalize`] gives it); `None`:
    /// the listener's own pool.
    pub fn route(&self, name: &str) -> Option<usize> {
        if let Some(&target) = self.exact.get(name) {
            return Some(target);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map(|&(_, target)| target)
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcards.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_beats_wildcard_and_longer_wildcards_beat_shorter() {
        let routes = Routes::new([
            ("*.example.com", 1),
            ("api.example.com", 2),
            ("*.eu.example.com", 3),
            ("*.com", 4),
        ]);
        assert_eq!(routes.route("api.example.com"), Some(2));
        assert_eq!(routes.route("www.example.com"), Some(1));
        assert_eq!(routes.route("a.b.example.com"), Some(1));
        assert_eq!(routes.route("x.eu.example.com"), Some(3));
        assert_eq!(routes.route("example.com"), Some(4));
        assert_eq!(routes.route("example.org"), None);
        assert_eq!(
            routes.route(".example.com"),
            Some(4),
            "no empty label matches"
        );
    }

    #[test]
    fn a_wildcard_does_not_match_its_own_domain() {
        let routes = Routes::new([("*.example.com", 1)]);
        assert_eq!(routes.route("example.com"), None);
        assert_eq!(routes.route("badexample.com"), None);
        assert!(!routes.is_empty());
        assert!(Routes::new([]).is_empty());
    }
}
