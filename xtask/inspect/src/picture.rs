//! Pictures of a [`GuestMap`]: [`svg`] draws the guest-physical space as a column
//! of segments in address order (regions and holes), each as tall as the logarithm
//! of its size, so a 4 KiB device shows beside a GiB of RAM and a TiB hole; regions
//! are coloured by kind, holes hatched, and a bar beside each region shows the leaf
//! sizes that translate it (and what is not mapped yet). [`html`] puts the picture
//! into a page with the text dump and the audit.

use std::fmt::Write;

use addrspace::{GpaRange, low_u32};
use vm_core::Populate;
use vm_core::config::Hex;
use vm_core::diag::{Finding, GuestMap, MapRegion, RegionKind, Size};

use crate::Unresolved;

/// Width of the picture.
const WIDTH: u32 = 1200;
/// Height of the title block.
const TOP: u32 = 64;
/// Left edge and width of the segment boxes.
const BOX_X: u32 = 150;
const BOX_W: u32 = 330;
/// Left edge and width of the leaf bars.
const LEAF_X: u32 = 490;
const LEAF_W: u32 = 120;
/// Left edge of the details.
const TEXT_X: u32 = 620;

/// The colour of each region kind (and of holes), for the picture and its tests.
pub fn kind_colour(kind: RegionKind) -> &'static str {
    match kind {
        RegionKind::Ram(Populate::Eager) => "#4e79a7",
        RegionKind::Ram(Populate::Lazy) => "#a0cbe8",
        RegionKind::Ram(Populate::LazyHuge) => "#7fa8d4",
        RegionKind::Identical => "#59a14f",
        RegionKind::ReservedRam => "#8cd17d",
        RegionKind::LinearRam => "#76b7b2",
        RegionKind::Passthrough => "#e15759",
        RegionKind::Emulated { attached: true } => "#b07aa1",
        RegionKind::Emulated { attached: false } => "#d4a6c8",
        RegionKind::Claimed => "#9c755f",
    }
}

/// Leaf colours: 1 GiB, 2 MiB, 4 KiB, not mapped.
pub const LEAF_COLOURS: [(&str, &str); 4] = [
    ("1G leaves", "#1b9e77"),
    ("2M leaves", "#d95f02"),
    ("4K leaves", "#7570b3"),
    ("not mapped", "#ffffff"),
];

/// Every kind, for the legend.
const KINDS: [RegionKind; 10] = [
    RegionKind::Ram(Populate::Eager),
    RegionKind::Ram(Populate::Lazy),
    RegionKind::Ram(Populate::LazyHuge),
    RegionKind::Identical,
    RegionKind::ReservedRam,
    RegionKind::LinearRam,
    RegionKind::Passthrough,
    RegionKind::Emulated { attached: true },
    RegionKind::Emulated { attached: false },
    RegionKind::Claimed,
];

/// Text made safe for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no other control characters.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// The height of a segment of `size` bytes: 16 px for 4 KiB, 7 px more per
/// doubling.
fn height(size: u64) -> u32 {
    let pages = (size / 4096).max(1);
    16 + 7 * (63 - pages.leading_zeros())
}

enum Segment<'a> {
    Region(&'a MapRegion),
    Hole(GpaRange),
}

impl Segment<'_> {
    fn range(&self) -> GpaRange {
        match self {
            Self::Region(r) => r.range,
            Self::Hole(h) => *h,
        }
    }
}

fn segments(map: &GuestMap) -> Vec<Segment<'_>> {
    let mut out: Vec<Segment<'_>> = map
        .regions
        .iter()
        .map(Segment::Region)
        .chain(map.holes.iter().map(|h| Segment::Hole(*h)))
        .collect();
    out.sort_by_key(|s| s.range().start());
    out
}

fn hex(v: usize) -> String {
    Hex(v as u64).to_string()
}

/// The SVG picture of `map` (see the module docs).
pub fn svg(map: &GuestMap) -> String {
    let segs = segments(map);
    let body: u32 = segs.iter().map(|s| height(s.range().size() as u64)).sum();
    let legend_y = TOP + body + 30;
    // KINDS is a short constant list.
    let total = legend_y + 24 * low_u32(KINDS.len() as u64).div_ceil(3) + 60;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{total}" viewBox="0 0 {WIDTH} {total}" font-family="DejaVu Sans, Verdana, sans-serif">
<defs>
  <pattern id="hole" patternUnits="userSpaceOnUse" width="8" height="8">
    <rect width="8" height="8" fill="#f4f4f4"/>
    <path d="M0,8 L8,0" stroke="#cccccc" stroke-width="1"/>
  </pattern>
</defs>
<rect width="{WIDTH}" height="{total}" fill="#ffffff"/>"##
    );
    let registers: Vec<String> = map
        .registers
        .iter()
        .flatten()
        .map(|r| format!("{} = {}", r.name, Hex(r.value)))
        .collect();
    let _ = writeln!(
        s,
        r##"<text x="10" y="24" font-size="18" font-weight="bold">{}</text>
<text x="10" y="44" font-size="12">{} · GPA limit {} · root {} · {} · {} table frames, {} guest frames</text>
<text x="{BOX_X}" y="{}" font-size="11" fill="#555555">log scale: each segment's height grows with log2 of its size</text>
<text x="{LEAF_X}" y="{}" font-size="11" fill="#555555">leaf sizes</text>"##,
        escape(&format!(
            "VM {} \"{}\": guest-physical map",
            map.vm_id, map.name
        )),
        escape(map.format),
        Size(map.gpa_limit as u64),
        hex(map.root.as_usize()),
        escape(&registers.join(", ")),
        map.table_frames,
        map.data_frames,
        TOP - 6,
        TOP - 6,
    );
    let mut y = TOP;
    for seg in &segs {
        let range = seg.range();
        let h = height(range.size() as u64);
        let mid = y + h / 2 + 4;
        let start = hex(range.start().as_usize());
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" font-size="11" font-family="DejaVu Sans Mono, monospace" text-anchor="end">{start}</text>"#,
            BOX_X - 6,
            y + 10
        );
        match seg {
            Segment::Hole(h_range) => {
                let title = format!(
                    "hole [{}, {}) {}",
                    start,
                    hex(h_range.end().as_usize()),
                    Size(h_range.size() as u64)
                );
                let _ = writeln!(
                    s,
                    r##"<g><title>{}</title><rect x="{BOX_X}" y="{y}" width="{BOX_W}" height="{h}" fill="url(#hole)" stroke="#bbbbbb"/><text x="{}" y="{mid}" font-size="11" fill="#777777">hole · {}</text></g>"##,
                    escape(&title),
                    BOX_X + 8,
                    Size(h_range.size() as u64)
                );
            }
            Segment::Region(r) => region(&mut s, r, y, h, mid),
        }
        y += h;
    }
    if let Some(last) = segs.last() {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" font-size="11" font-family="DejaVu Sans Mono, monospace" text-anchor="end">{}</text>"#,
            BOX_X - 6,
            y + 4,
            hex(last.range().end().as_usize())
        );
    }
    legend(&mut s, legend_y);
    s.push_str("</svg>\n");
    s
}

fn region(s: &mut String, r: &MapRegion, y: u32, h: u32, mid: u32) {
    let size = Size(r.range.size() as u64);
    let hpa = r
        .hpa
        .map(|h| format!(" -> {}", hex(h.as_usize())))
        .unwrap_or_default();
    let flags = if r.flags.is_empty() {
        String::from("trap")
    } else {
        r.flags.to_string()
    };
    let title = format!(
        "[{}, {}) {size} {} {flags}{hpa} leaves {} frames {} ({})",
        hex(r.range.start().as_usize()),
        hex(r.range.end().as_usize()),
        r.kind,
        r.leaves,
        r.frames,
        r.source
    );
    let _ = writeln!(
        s,
        r##"<g><title>{}</title><rect x="{BOX_X}" y="{y}" width="{BOX_W}" height="{h}" fill="{}" stroke="#333333"/><text x="{}" y="{mid}" font-size="11" fill="#000000">{} · {size}</text>"##,
        escape(&title),
        kind_colour(r.kind),
        BOX_X + 8,
        escape(r.kind.name()),
    );
    // The leaf bar: each size's share of the region's bytes, the rest not mapped.
    let total = r.range.size() as u64;
    let bytes = [
        (r.leaves.g1 as u64) << 30,
        (r.leaves.m2 as u64) << 21,
        (r.leaves.k4 as u64) << 12,
    ];
    let mapped: u64 = bytes.iter().sum();
    let mut x = LEAF_X as f64;
    let bar_h = h.saturating_sub(4).max(1);
    for ((_, colour), b) in LEAF_COLOURS
        .iter()
        .zip(bytes.iter().copied().chain([total.saturating_sub(mapped)]))
    {
        if b == 0 {
            continue;
        }
        let w = LEAF_W as f64 * b as f64 / total as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{x:.2}" y="{}" width="{w:.2}" height="{bar_h}" fill="{colour}"/>"#,
            y + 2
        );
        x += w;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEAF_X}" y="{}" width="{LEAF_W}" height="{bar_h}" fill="none" stroke="#333333"/>"##,
        y + 2
    );
    let detail = format!("{flags}{hpa} · {} · {}", r.leaves, r.source);
    let _ = writeln!(
        s,
        r#"<text x="{TEXT_X}" y="{mid}" font-size="11">{}</text></g>"#,
        escape(&detail)
    );
}

fn legend(s: &mut String, y0: u32) {
    let items = KINDS
        .iter()
        .map(|k| (k.name(), kind_colour(*k)))
        .chain([("hole", "url(#hole)")])
        .chain(LEAF_COLOURS);
    for ((name, colour), i) in items.zip(0u32..) {
        let (col, row) = (i % 3, i / 3);
        let (x, y) = (10 + col * 400, y0 + row * 24);
        let _ = writeln!(
            s,
            r##"<rect x="{x}" y="{y}" width="18" height="14" fill="{colour}" stroke="#333333"/><text x="{}" y="{}" font-size="12">{}</text>"##,
            x + 26,
            y + 12,
            escape(name)
        );
    }
}

/// An HTML page with the picture, the map dump, what the config names but only a
/// device tree places (left out of the map) and the audit findings.
pub fn html(map: &GuestMap, unresolved: &[Unresolved], findings: &[Finding]) -> String {
    let picture = svg(map);
    // The XML declaration has no place inside HTML.
    let inline = picture
        .split_once("?>\n")
        .map_or(picture.as_str(), |(_, rest)| rest);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; }}
li.error {{ color: #b00020; }}
li.warning {{ color: #8a5a00; }}
</style>
</head>
<body>
<h1>{title}</h1>
{inline}
<h2>Map</h2>
<pre>{dump}</pre>
<h2>Audit</h2>
"#,
        title = escape(&format!(
            "VM {} \"{}\": guest-physical map",
            map.vm_id, map.name
        )),
        dump = escape(&map.to_string()),
    );
    if !unresolved.is_empty() {
        s.push_str("<h2>Unresolved (placed only by a device tree; not in the map)</h2>\n<ul>\n");
        for u in unresolved {
            let _ = writeln!(s, "<li>{}</li>", escape(&u.to_string()));
        }
        s.push_str("</ul>\n");
    }
    if findings.is_empty() {
        s.push_str("<p>No finding.</p>\n");
    } else {
        s.push_str("<ul>\n");
        for f in findings {
            let _ = writeln!(
                s,
                r#"<li class="{}">{}</li>"#,
                f.severity(),
                escape(&f.to_string())
            );
        }
        s.push_str("</ul>\n");
    }
    s.push_str("</body>\n</html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heights_grow_with_the_logarithm() {
        assert_eq!(height(0x1000), 16);
        assert_eq!(height(0x2000), 23);
        assert_eq!(height(0x20_0000), 16 + 7 * 9);
        assert_eq!(height(1 << 40), 16 + 7 * 28);
        // Below a page (never in a map) counts as a page.
        assert_eq!(height(1), 16);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape(r#"a<b>&"c"'d'"#),
            "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;"
        );
        assert_eq!(escape("x\u{1}y"), "x?y");
    }
}
