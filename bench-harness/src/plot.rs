//! `--plot FILE.svg`: a picture a person opens in a browser, written by
//! hand (no plotting library, no system fonts or libraries needed).
//!
//! - Latency by percentile, HdrHistogram style: the x axis is in "nines"
//!   (0%, 90%, 99%, 99.9%, ... equally spaced, i.e. -log10(1 - q)), so the
//!   tail gets as much room as the median. One line per kind of operation
//!   (and "all") for a single run; one line per point for a sweep.
//! - For a sweep, a second panel: throughput (x) against p99 (y), the
//!   capacity curve, each point labelled with its swept value.
//!
//! Each line is a `<g class="series" data-series="NAME">`, so scripts and
//! tests can find them.

use std::fmt::Write;
use std::path::Path;

use hdrhistogram::Histogram;

use crate::report::{throughput, Point};

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 440.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 190.0;
const MARGIN_TOP: f64 = 50.0;
const MARGIN_BOTTOM: f64 = 60.0;
/// Deepest percentile drawn: 99.999% (5 nines), or less when the run has
/// fewer samples than that needs.
const NINES_MAX: f64 = 5.0;
const COLORS: [&str; 10] = [
    "#4f7cac", "#d9822b", "#3f9c5a", "#c0392b", "#8e6bb8", "#7f8c8d", "#b5a22c", "#2aa1b3",
    "#d35fa0", "#5d4037",
];

pub struct Series {
    pub name: String,
    /// (nines, latency ms)
    pub points: Vec<(f64, f64)>,
}

/// The latency curve of one histogram, sampled every quarter nine up to
/// what its sample count supports; its last point is the maximum.
pub fn percentile_series(name: &str, h: &Histogram<u64>) -> Option<Series> {
    if h.is_empty() {
        return None;
    }
    let top = (h.len() as f64).log10().clamp(0.25, NINES_MAX);
    let steps = (top * 4.0).floor() as usize;
    let mut points: Vec<(f64, f64)> = (0..steps)
        .map(|i| {
            let x = i as f64 / 4.0;
            let q = 1.0 - 10f64.powf(-x);
            (x, h.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect();
    points.push((steps as f64 / 4.0, h.max() as f64 / 1000.0));
    Some(Series {
        name: name.to_string(),
        points,
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round step for about `n` ticks over [0, max].
fn tick_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{}", (v * 10.0).round() / 10.0)
    } else {
        format!("{}", (v * 1000.0).round() / 1000.0)
    }
}

fn nines_label(x: f64) -> String {
    let pct = 100.0 * (1.0 - 10f64.powf(-x));
    let s = format!("{pct:.5}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// One panel: axes, grid, lines (with dots when `dots`), legend.
#[allow(clippy::too_many_arguments)]
fn panel(
    out: &mut String,
    top: f64,
    title: &str,
    subtitle: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    x_nines: bool,
    dots: Option<&[String]>,
) {
    let (x0, x1) = (MARGIN_LEFT, WIDTH - MARGIN_RIGHT);
    let (y0, y1) = (top + PANEL_HEIGHT - MARGIN_BOTTOM, top + MARGIN_TOP);
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = all
        .clone()
        .map(|p| p.0)
        .fold(0.0, f64::max)
        .max(if x_nines { 1.0 } else { 1e-9 });
    let y_max = all.map(|p| p.1).fold(0.0, f64::max).max(1e-6) * 1.05;
    let sx = |x: f64| x0 + (x1 - x0) * x / x_max;
    let sy = |y: f64| y0 - (y0 - y1) * y / y_max;
    let _ = writeln!(
        out,
        r#"<text x="{x0}" y="{}" font-size="16" font-weight="bold">{}</text>"#,
        top + 22.0,
        esc(title)
    );
    if !subtitle.is_empty() {
        let _ = writeln!(
            out,
            r##"<text x="{x0}" y="{}" font-size="12" fill="#555">{}</text>"##,
            top + 40.0,
            esc(subtitle)
        );
    }
    let _ = writeln!(out, r##"<g class="axes" stroke="#999" font-size="11">"##);
    // y grid and labels
    let step = tick_step(y_max, 6.0);
    let mut y = 0.0;
    while y <= y_max {
        let _ = writeln!(
            out,
            r##"<line x1="{x0:.1}" y1="{0:.1}" x2="{x1:.1}" y2="{0:.1}" stroke="#e4e4e4"/><text x="{1:.1}" y="{2:.1}" text-anchor="end" stroke="none">{3}</text>"##,
            sy(y),
            x0 - 6.0,
            sy(y) + 4.0,
            fmt_num(y)
        );
        y += step;
    }
    // x grid and labels
    let xs: Vec<(f64, String)> = if x_nines {
        (0..=x_max.ceil() as usize)
            .map(|i| (i as f64, nines_label(i as f64)))
            .collect()
    } else {
        let step = tick_step(x_max, 6.0);
        (0..)
            .map(|i| i as f64 * step)
            .take_while(|x| *x <= x_max)
            .map(|x| (x, fmt_num(x)))
            .collect()
    };
    for (x, label) in xs {
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{y0:.1}" x2="{0:.1}" y2="{y1:.1}" stroke="#e4e4e4"/><text x="{0:.1}" y="{1:.1}" text-anchor="middle" stroke="none">{2}</text>"##,
            sx(x.min(x_max)),
            y0 + 16.0,
            esc(&label)
        );
    }
    let _ = writeln!(
        out,
        r#"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle" stroke="none" font-size="13">{}</text>"#,
        (x0 + x1) / 2.0,
        y0 + 40.0,
        esc(x_label)
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle" stroke="none" font-size="13">{}</text>"#,
        x0 - 55.0,
        (y0 + y1) / 2.0,
        esc(y_label)
    );
    let _ = writeln!(out, "</g>");
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<g class="series" data-series="{}"><polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            esc(&s.name),
            pts.join(" ")
        );
        if let Some(labels) = dots {
            for (j, &(x, y)) in s.points.iter().enumerate() {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
                    sx(x),
                    sy(y),
                    sx(x) + 6.0,
                    sy(y) - 6.0,
                    esc(labels.get(j).map_or("", String::as_str))
                );
            }
        }
        // A lone series needs no legend (the title names it).
        if series.len() > 1 {
            let ly = y1 + 18.0 * i as f64;
            let _ = write!(
                out,
                r#"<line x1="{0:.1}" y1="{ly:.1}" x2="{1:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{2:.1}" y="{3:.1}" font-size="12">{4}</text>"#,
                x1 + 15.0,
                x1 + 40.0,
                x1 + 46.0,
                ly + 4.0,
                esc(&s.name)
            );
        }
        let _ = writeln!(out, "</g>");
    }
}

/// The whole SVG for a run (one point) or a sweep (several).
pub fn svg(points: &[Point]) -> String {
    let Some(first) = points.first() else {
        return String::new();
    };
    let a = &first.args;
    let sweep = a.sweep.is_some();
    let panels = if sweep { 2.0 } else { 1.0 };
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{0}" viewBox="0 0 {WIDTH} {0}" font-family="sans-serif">"#,
        PANEL_HEIGHT * panels
    );
    let what = format!(
        "ferro-bench {} against {} ({} conns{})",
        a.workload.name(),
        a.endpoints.join(","),
        a.conns,
        if sweep {
            String::new()
        } else {
            format!(", {} clients", a.clients)
        }
    );
    let _ = writeln!(out, "<title>{}</title>", esc(&what));
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let series: Vec<Series> = if sweep {
        points
            .iter()
            .filter_map(|p| percentile_series(&p.label(), &p.report.measured.latency_us))
            .collect()
    } else {
        let m = &first.report.measured;
        let mut v: Vec<Series> = percentile_series("all", &m.latency_us)
            .into_iter()
            .collect();
        if m.kinds.len() > 1 {
            v.extend(
                m.kinds
                    .iter()
                    .filter_map(|(k, s)| percentile_series(k, &s.latency_us)),
            );
        }
        v
    };
    panel(
        &mut out,
        0.0,
        "Latency by percentile",
        &what,
        "percentile (log scale of nines)",
        "latency (ms)",
        &series,
        true,
        None,
    );
    if sweep {
        let (pts, labels): (Vec<(f64, f64)>, Vec<String>) = points
            .iter()
            .filter(|p| !p.report.measured.latency_us.is_empty())
            .map(|p| {
                let h = &p.report.measured.latency_us;
                (
                    (
                        throughput(&p.report),
                        h.value_at_quantile(0.99) as f64 / 1000.0,
                    ),
                    p.label(),
                )
            })
            .unzip();
        panel(
            &mut out,
            PANEL_HEIGHT,
            "Throughput against p99 latency",
            "one dot per sweep point",
            "throughput (successful requests/s)",
            "p99 latency (ms)",
            &[Series {
                name: "throughput-p99".into(),
                points: pts,
            }],
            false,
            Some(&labels),
        );
    }
    out.push_str("</svg>\n");
    out
}

pub fn write(path: &Path, points: &[Point]) -> Result<(), String> {
    std::fs::write(path, svg(points)).map_err(|e| format!("--plot {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn series_cover_the_nines_the_samples_support() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap();
        }
        let s = percentile_series("x", &h).unwrap();
        // 1000 samples: 3 nines, every quarter, then the max.
        assert_eq!(s.points.len(), 13);
        assert_eq!(s.points.last().unwrap().0, 3.0);
        assert!((s.points.last().unwrap().1 - 10.0).abs() < 0.05);
        assert!(s
            .points
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert!(percentile_series("empty", &new_histogram()).is_none());
    }

    #[test]
    fn labels_and_ticks() {
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(tick_step(9.0, 6.0), 2.0);
        assert_eq!(tick_step(0.7, 6.0), 0.2);
        assert_eq!(esc("a<b&\"c\""), "a&lt;b&amp;&quot;c&quot;");
    }
}
