//! Output: the terminal table, `summary.json` and the SVG chart of map time against
//! mapped size.

use std::fmt::Write as _;

use crate::harness::{Figure, Target, num};

/// The table a person reads: one row per figure with both medians, the ratio, the
/// target and whether it is met.
pub fn table(figs: &[Figure]) -> String {
    let header = [
        "figure",
        "unit",
        "ours",
        "peer",
        "ours/peer",
        "spread % (runs)",
        "target",
        "status",
    ];
    let rows: Vec<[String; 8]> = figs
        .iter()
        .map(|f| {
            [
                f.name.clone(),
                f.unit.to_string(),
                num(f.ours),
                f.peer.map(num).unwrap_or_else(|| "-".into()),
                f.ratio().map(num).unwrap_or_else(|| "-".into()),
                f.spread
                    .map(|(o, p, n)| format!("{}/{} ({n})", num(o), num(p)))
                    .unwrap_or_default(),
                f.target.map(|t| t.describe()).unwrap_or_default(),
                match f.met() {
                    Some(true) => "met".into(),
                    Some(false) => "MISSED".into(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    let mut width = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            let pad = w - c.chars().count();
            // Text columns left-aligned, numbers right-aligned.
            if !(2..6).contains(&i) {
                out.push_str(c);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
            }
            out.push_str(if i + 1 < cells.len() { "  " } else { "\n" });
        }
    };
    line(&mut out, &header.map(String::from));
    let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, &rule);
    for r in &rows {
        line(&mut out, r);
    }
    let missed: Vec<&str> = figs
        .iter()
        .filter(|f| f.met() == Some(false))
        .map(|f| f.name.as_str())
        .collect();
    let targets = figs.iter().filter(|f| f.target.is_some()).count();
    let _ = writeln!(
        out,
        "\ntargets: {} met, {} missed{}",
        targets - missed.len(),
        missed.len(),
        if missed.is_empty() {
            String::new()
        } else {
            format!(" ({})", missed.join(", "))
        }
    );
    let notes: Vec<&Figure> = figs.iter().filter(|f| !f.note.is_empty()).collect();
    if !notes.is_empty() {
        out.push_str("notes:\n");
        for f in notes {
            let _ = writeln!(out, "  {}: {}", f.name, f.note);
        }
    }
    out
}

/// A JSON number, or `null` for NaN and infinities.
fn json_num(x: f64) -> String {
    if x.is_finite() {
        // Enough digits to be useful, no float noise.
        let s = format!("{x:.6}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s.is_empty() || s == "-" {
            "0".into()
        } else {
            s.into()
        }
    } else {
        "null".into()
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `summary.json`: an array with one object per figure, `{ "name", "unit", "ours",
/// "peer" (or null), "ratio" (or null) }`, plus `"spread"` (`{ "ours", "peer", "runs" }`:
/// `(max - min) / median` in % over the runs whose median is shown, or null),
/// `"target"`, `"met"` and `"note"` for people reading it.
pub fn json(figs: &[Figure]) -> String {
    let mut out = String::from("[\n");
    for (i, f) in figs.iter().enumerate() {
        let _ = write!(
            out,
            "  {{ \"name\": {}, \"unit\": {}, \"ours\": {}, \"peer\": {}, \"ratio\": {}, \
             \"spread\": {}, \"target\": {}, \"met\": {}, \"note\": {} }}",
            json_str(&f.name),
            json_str(f.unit),
            json_num(f.ours),
            f.peer.map(json_num).unwrap_or_else(|| "null".into()),
            f.ratio().map(json_num).unwrap_or_else(|| "null".into()),
            f.spread
                .map(|(o, p, n)| format!(
                    "{{ \"ours\": {}, \"peer\": {}, \"runs\": {n} }}",
                    json_num(o),
                    json_num(p)
                ))
                .unwrap_or_else(|| "null".into()),
            f.target
                .map(|t| json_str(&t.describe()))
                .unwrap_or_else(|| "null".into()),
            match f.met() {
                Some(m) => m.to_string(),
                None => "null".into(),
            },
            json_str(&f.note),
        );
        out.push_str(if i + 1 < figs.len() { ",\n" } else { "\n" });
    }
    out.push_str("]\n");
    out
}

/// One series of the chart.
pub struct Series<'a> {
    /// Legend text.
    pub label: &'a str,
    /// Stroke colour.
    pub color: &'a str,
    /// `(mapped bytes, µs)` points.
    pub points: Vec<(f64, f64)>,
}

/// A log-log line chart of map time (µs) against mapped size (bytes), hand-written
/// SVG.
pub fn svg(title: &str, series: &[Series<'_>]) -> String {
    let (w, h) = (720.0, 440.0);
    let (left, right, top, bottom) = (80.0, 200.0, 50.0, 60.0);
    let pts = series.iter().flat_map(|s| s.points.iter());
    let good: Vec<(f64, f64)> = pts
        .copied()
        .filter(|&(x, y)| x > 0.0 && y > 0.0 && y.is_finite())
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &good {
        x0 = x0.min(x.log10());
        x1 = x1.max(x.log10());
        y0 = y0.min(y.log10());
        y1 = y1.max(y.log10());
    }
    if good.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    // Whole decades on the time axis; a little room on the size axis.
    let (y0, y1) = (y0.floor(), y1.ceil().max(y0.floor() + 1.0));
    let pad = ((x1 - x0) * 0.05).max(0.05);
    let (x0, x1) = (x0 - pad, x1 + pad);
    let px = |x: f64| left + (x.log10() - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| h - bottom - (y.log10() - y0) / (y1 - y0) * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{w}" height="{h}" fill="white"/><text x="{}" y="24" font-size="15" text-anchor="middle">{}</text>"#,
        (w - right + left) / 2.0,
        xml(title)
    );
    // Axes.
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>"#,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    // Time grid: one line per decade.
    let mut d = y0;
    while d <= y1 + 1e-9 {
        let y = py(10f64.powf(d));
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            w - right,
            left - 6.0,
            y + 4.0,
            time_label(10f64.powf(d))
        );
        d += 1.0;
    }
    // Size ticks at the measured sizes.
    let mut sizes: Vec<f64> = good.iter().map(|p| p.0).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    for x in sizes {
        let tx = px(x);
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{top}" x2="{tx:.1}" y2="{}" stroke="#eee"/><text x="{tx:.1}" y="{}" text-anchor="middle">{}</text>"##,
            h - bottom,
            h - bottom + 18.0,
            size_label(x)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">mapped size (4 KiB leaves, log scale)</text>"#,
        (w - right + left) / 2.0,
        h - 16.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">map time (log scale)</text>"#,
        (h - bottom + top) / 2.0
    );
    for (i, ser) in series.iter().enumerate() {
        let pts: Vec<String> = ser
            .points
            .iter()
            .filter(|&&(x, y)| x > 0.0 && y > 0.0 && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            ser.color,
            pts.join(" ")
        );
        for p in &pts {
            let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                s,
                r#"<circle cx="{cx}" cy="{cy}" r="3.5" fill="{}"/>"#,
                ser.color
            );
        }
        let ly = top + 10.0 + i as f64 * 22.0;
        let lx = w - right + 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            lx + 22.0,
            ser.color,
            lx + 28.0,
            ly + 4.0,
            xml(ser.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A bar chart of `ours / peer` for every figure with a ratio target (issue 17's
/// table as a picture): one bar per figure, its target as a black tick, bars over
/// their target red. Hand-written SVG.
pub fn ratio_svg(title: &str, figs: &[Figure]) -> String {
    let rows: Vec<(&Figure, f64, f64)> = figs
        .iter()
        .filter_map(|f| match (f.ratio(), f.target) {
            (Some(r), Some(Target::RatioAtMost(t))) => Some((f, r, t)),
            _ => None,
        })
        .collect();
    let (left, right, top, row) = (250.0, 150.0, 50.0, 22.0);
    let w = 900.0;
    let h = top + 30.0 + row * rows.len().max(1) as f64;
    let max = rows
        .iter()
        .map(|&(_, r, t)| r.max(t))
        .fold(1.0, f64::max)
        .min(10.0);
    let px = |x: f64| left + x.min(max) / max * (w - left - right);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{w}" height="{h}" fill="white"/><text x="{}" y="24" font-size="15" text-anchor="middle">{}</text>"#,
        w / 2.0,
        xml(title)
    );
    let one = px(1.0);
    let _ = writeln!(
        s,
        r##"<line x1="{one:.1}" y1="{}" x2="{one:.1}" y2="{}" stroke="#999" stroke-dasharray="4"/><text x="{one:.1}" y="{}" text-anchor="middle">1.0 = peer</text>"##,
        top - 8.0,
        h - 20.0,
        h - 6.0
    );
    for (i, &(f, r, t)) in rows.iter().enumerate() {
        let y = top + i as f64 * row;
        let color = if r <= t { "#27ae60" } else { "#c0392b" };
        let spread = f
            .spread
            .map(|(o, _, n)| format!(" ±{}% ({n} runs)", num(o / 2.0)))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text><rect x="{left}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black" stroke-width="2"/><text x="{:.1}" y="{:.1}">{} (target {}){spread}</text>"#,
            left - 6.0,
            y + 14.0,
            xml(&f.name),
            y + 3.0,
            px(r) - left,
            row - 6.0,
            px(t),
            y,
            px(t),
            y + row,
            px(r.max(t)) + 6.0,
            y + 14.0,
            num(r),
            num(t),
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn time_label(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{} ms", us / 1e3)
    } else if us >= 1.0 {
        format!("{us} µs")
    } else {
        format!("{} ns", us * 1e3)
    }
}

fn size_label(bytes: f64) -> String {
    let b = bytes as u64;
    if b >= 1 << 30 {
        format!("{} GiB", b >> 30)
    } else if b >= 1 << 20 {
        format!("{} MiB", b >> 20)
    } else {
        format!("{} KiB", b >> 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_every_field_and_nulls() {
        let figs = [
            Figure::pair("map_1g_4k", "µs", 100.0, 400.0).target(Target::RatioAtMost(0.4)),
            Figure::solo("shootdown_us_1", "µs", 3.5),
        ];
        let j = json(&figs);
        assert!(
            j.contains(
                r#""name": "map_1g_4k", "unit": "µs", "ours": 100, "peer": 400, "ratio": 0.25"#
            ),
            "{j}"
        );
        assert!(j.contains(r#""met": true"#), "{j}");
        assert!(j.contains(r#""name": "shootdown_us_1", "unit": "µs", "ours": 3.5, "peer": null, "ratio": null"#), "{j}");
        assert_eq!(json_num(f64::NAN), "null");
        assert_eq!(json_num(0.0), "0");
        assert_eq!(json_str("a\"b"), r#""a\"b""#);
    }

    #[test]
    fn table_marks_misses() {
        let figs = [Figure::pair("x", "µs", 5.0, 10.0).target(Target::RatioAtMost(0.4))];
        let t = table(&figs);
        assert!(t.contains("MISSED"), "{t}");
        assert!(t.contains("targets: 0 met, 1 missed (x)"), "{t}");
    }

    #[test]
    fn ratio_chart_has_one_bar_per_ratio_target() {
        let figs = [
            Figure::pair("a", "ns", 5.0, 10.0).target(Target::RatioAtMost(0.7)),
            Figure::pair("b", "ns", 12.0, 10.0).target(Target::RatioAtMost(1.0)),
            Figure::solo("c", "µs", 3.5),
        ];
        let s = ratio_svg("t", &figs);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<rect").count(), 3, "{s}");
        assert!(s.contains("#27ae60") && s.contains("#c0392b"));
    }

    #[test]
    fn svg_is_well_formed_enough() {
        let s = svg(
            "t",
            &[Series {
                label: "ours",
                color: "#c00",
                points: vec![(64.0 * 1048576.0, 100.0), (1073741824.0, 1600.0)],
            }],
        );
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<circle").count(), 2);
        assert!(s.contains("64 MiB") && s.contains("1 GiB"));
    }
}
