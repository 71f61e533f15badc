//! Hand-written SVG horizontal bar charts (no fonts to fetch: generic `sans-serif`).

use std::fmt::Write as _;

/// One bar: a label, its value (`None`: drawn as "n/a"), and its colour.
#[derive(Debug, Clone)]
pub struct Bar {
    /// The row name.
    pub label: String,
    /// The value.
    pub value: Option<f64>,
    /// Fill colour, such as `#2a9d8f`.
    pub color: &'static str,
}

const LABEL_W: f64 = 130.0;
const BAR_W: f64 = 440.0;
const VALUE_W: f64 = 110.0;
const ROW_H: f64 = 24.0;
const TOP: f64 = 40.0;

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A compact number: three significant digits, thousands without decimals.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || (v.fract() == 0.0 && a < 1e15) {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{v:.3}")
    }
}

/// A horizontal bar chart titled `title`, values in `unit`; `lower_is_better` is stated in
/// the subtitle.
pub fn bar_chart(title: &str, unit: &str, lower_is_better: bool, bars: &[Bar]) -> String {
    let max = bars
        .iter()
        .filter_map(|b| b.value)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let width = LABEL_W + BAR_W + VALUE_W;
    let height = TOP + ROW_H * bars.len() as f64 + 12.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="8" y="18" font-size="14" font-weight="bold">{}</text>"#,
        esc(title)
    );
    let better = if lower_is_better {
        "lower is better"
    } else {
        "higher is better"
    };
    let _ = writeln!(
        s,
        r##"<text x="8" y="33" fill="#555">{} ({better})</text>"##,
        esc(unit)
    );
    for (i, b) in bars.iter().enumerate() {
        let y = TOP + ROW_H * i as f64;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LABEL_W - 6.0,
            y + 16.0,
            esc(&b.label)
        );
        match b.value.filter(|v| v.is_finite()) {
            Some(v) => {
                let w = if max > 0.0 {
                    (v / max * BAR_W).max(1.0)
                } else {
                    1.0
                };
                let _ = writeln!(
                    s,
                    r#"<rect x="{LABEL_W}" y="{}" width="{w:.1}" height="{}" fill="{}"/>"#,
                    y + 4.0,
                    ROW_H - 8.0,
                    b.color
                );
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{}">{}</text>"#,
                    LABEL_W + w + 4.0,
                    y + 16.0,
                    num(v)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    r##"<text x="{}" y="{}" fill="#999">n/a</text>"##,
                    LABEL_W + 4.0,
                    y + 16.0
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_bars_and_escapes() {
        let bars = vec![
            Bar {
                label: "a<b".into(),
                value: Some(2.0),
                color: "#000",
            },
            Bar {
                label: "c".into(),
                value: None,
                color: "#000",
            },
        ];
        let s = bar_chart("T & U", "Gbit/s", false, &bars);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert!(s.contains("a&lt;b") && s.contains("T &amp; U") && s.contains("n/a"));
        assert_eq!(s.matches("<rect").count(), 2);
        assert_eq!(num(12345.6), "12346");
        assert_eq!(num(0.01234), "0.012");
    }
}
