//! The pictures: each board config's SVG is well-formed and renders with a real
//! renderer (Debian's `rsvg-convert`, which `cargo xtask test` installs), the
//! rendered image has the size the SVG declares and shows every region kind of the
//! map in its colour; the renderer refuses a malformed file (so this check can
//! fail); the pictures committed under `docs/` are what the tool draws today.

use std::path::Path;
use std::process::Command;

use inspect::picture::{LEAF_COLOURS, html, kind_colour, svg};
use inspect::{Format, inspect};
use vm_core::diag::GuestMap;

mod common;

use common::{board_config, workspace};

/// The map of board config `name` in the format `inspect` guesses for it.
fn board_map(name: &str) -> GuestMap {
    let (path, config) = board_config(name);
    let (format, _) = Format::for_config(&path, &config);
    inspect(config, format).expect("builds").guest_map(None)
}

const BOARDS: [&str; 3] = ["qemu-virt-aarch64", "qemu-virt-riscv64", "qemu-pc-x86_64"];

/// Renders `svg` to PNG with rsvg-convert; the PNG bytes or the renderer's error.
fn render(name: &str, svg: &str) -> Result<Vec<u8>, String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let (input, output) = (
        dir.join(format!("{name}.svg")),
        dir.join(format!("{name}.png")),
    );
    std::fs::write(&input, svg).expect("write svg");
    let _ = std::fs::remove_file(&output);
    let out = Command::new("rsvg-convert")
        .arg("--format=png")
        .arg("--output")
        .arg(&output)
        .arg(&input)
        .output()
        .unwrap_or_else(|e| {
            panic!("rsvg-convert cannot run ({e}): install librsvg2-bin (`cargo xtask test` does)")
        });
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(std::fs::read(&output).expect("png written"))
}

/// Width, height and RGBA pixels of a PNG.
fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<[u8; 4]>) {
    let mut decoder = png::Decoder::new(png_bytes);
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let px = match info.color_type {
        png::ColorType::Rgba => buf[..info.buffer_size()]
            .chunks(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect(),
        png::ColorType::Rgb => buf[..info.buffer_size()]
            .chunks(3)
            .map(|c| [c[0], c[1], c[2], 255])
            .collect(),
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    (info.width, info.height, px)
}

fn rgb(hex: &str) -> [u8; 4] {
    let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).expect("colour");
    let [_, r, g, b] = v.to_be_bytes();
    [r, g, b, 255]
}

/// The `width="…" height="…"` the SVG declares.
fn declared_size(svg: &str) -> (u32, u32) {
    let attr = |name: &str| -> u32 {
        let tag = &svg[svg.find("<svg ").expect("svg element")..];
        let at = tag.find(&format!(" {name}=\"")).expect(name) + name.len() + 3;
        tag[at..tag[at..].find('"').expect("quote") + at]
            .parse()
            .expect("number")
    };
    (attr("width"), attr("height"))
}

#[test]
fn board_pictures_render_with_every_kind_in_its_colour() {
    for name in BOARDS {
        let map = board_map(name);
        let picture = svg(&map);
        let png_bytes = render(name, &picture).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (w, h, px) = decode(&png_bytes);
        assert_eq!((w, h), declared_size(&picture), "{name}");
        let count = |colour: [u8; 4]| px.iter().filter(|p| **p == colour).count();
        for r in &map.regions {
            let c = kind_colour(r.kind);
            // A 4 KiB region is a 16 px tall, 330 px wide box: thousands of pixels.
            assert!(count(rgb(c)) > 2000, "{name}: {:?} ({c}) not drawn", r.kind);
        }
        // The leaf bars: 4 KiB leaves everywhere these boards map RAM.
        assert!(
            count(rgb(LEAF_COLOURS[2].1)) > 1000,
            "{name}: no 4K leaf bar"
        );
        // The holes' hatching.
        assert!(count(rgb("#f4f4f4")) > 10_000, "{name}: holes not drawn");
    }
}

#[test]
fn the_renderer_refuses_a_malformed_picture() {
    let broken = svg(&board_map("qemu-virt-aarch64")).replace("</g>", "");
    assert!(
        render("broken", &broken).is_err(),
        "rsvg-convert accepted a malformed SVG"
    );
}

#[test]
fn the_page_holds_the_picture_the_map_and_the_audit() {
    let map = board_map("qemu-virt-aarch64");
    let findings = vm_core::diag::audit(&map, &[]);
    assert!(!findings.is_empty());
    let page = html(&map, &[], &findings);
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(!page.contains("<?xml"));
    assert!(page.contains("kernel.memory_regions[0]"));
    assert!(page.contains("<li class=\"warning\">warning writable-code"));
}

/// The committed pictures under `docs/maps/` (shown in the README) are what the
/// tool draws for the board configs now.
#[test]
fn docs_pictures_are_up_to_date() {
    for name in BOARDS {
        let file = workspace().join("docs/maps").join(format!("{name}.svg"));
        let committed =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            committed == svg(&board_map(name)),
            "{} is out of date: run `cargo xtask inspect configs/{name}.toml --svg docs/maps/{name}.svg`",
            file.display()
        );
    }
}
