//! Decode, resize and encode per format, on images generated here, and an AVIF from the
//! test fixtures (nothing here encodes AVIF).
//! `cargo bench --bench thumbnail`; `mxcd bench thumbnails DIR` measures real images.

use std::hint::black_box;
use std::io::Cursor;

use criterion::{Criterion, criterion_group, criterion_main};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use mxcd::domain::{Method, Plan, ThumbnailSpec};
use mxcd::thumbnail::{Limits, probe, render_all, stages};

/// Photo-like content: smooth gradients with fine texture.
fn photo(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 29;
        Rgb([
            (x * 255 / w) as u8 ^ n as u8,
            (y * 255 / h) as u8,
            ((x / 7 + y / 5) % 256) as u8,
        ])
    })
}

fn encoded(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A progressive JPEG as libjpeg writes it (successive approximation: refinement
/// scans), 4:2:0.
fn progressive_jpeg(img: &RgbImage) -> Vec<u8> {
    let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
    c.set_size(img.width() as usize, img.height() as usize);
    c.set_quality(90.0);
    c.set_chroma_sampling_pixel_sizes((2, 2), (2, 2));
    c.set_progressive_mode();
    let mut c = c.start_compress(Vec::new()).unwrap();
    c.write_scanlines(img.as_raw()).unwrap();
    c.finish().unwrap()
}

fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let rgb = DynamicImage::ImageRgb8(photo(2560, 1600));
    let alpha = DynamicImage::ImageRgba8(RgbaImage::from_fn(1600, 1000, |x, y| {
        Rgba([
            x as u8,
            y as u8,
            (x ^ y) as u8,
            if (x / 50 + y / 50) % 2 == 0 { 255 } else { 96 },
        ])
    }));
    vec![
        ("jpeg", encoded(rgb.clone(), ImageFormat::Jpeg)),
        ("jpeg-progressive", progressive_jpeg(&photo(4000, 3000))),
        ("png", encoded(rgb.clone(), ImageFormat::Png)),
        ("png-alpha", encoded(alpha, ImageFormat::Png)),
        ("webp-lossless", encoded(rgb.clone(), ImageFormat::WebP)),
        (
            "gif",
            encoded(DynamicImage::ImageRgb8(photo(1280, 800)), ImageFormat::Gif),
        ),
        (
            "avif",
            include_bytes!("../tests/fixtures/avif/bench-1280x800.avif").to_vec(),
        ),
    ]
}

fn recommended() -> Vec<ThumbnailSpec> {
    [
        (32, 32, Method::Crop),
        (96, 96, Method::Crop),
        (320, 240, Method::Scale),
        (640, 480, Method::Scale),
        (800, 600, Method::Scale),
    ]
    .map(|(w, h, m)| ThumbnailSpec::new(w, h, m).unwrap())
    .to_vec()
}

fn benches(c: &mut Criterion) {
    let limits = Limits::default();
    let specs = recommended();
    for (name, data) in inputs() {
        let p = probe(&data, &limits).unwrap();
        let plans: Vec<Plan> = specs.iter().map(|s| s.plan(p.width, p.height)).collect();
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        group.bench_function("decode", |b| {
            b.iter(|| stages::decode(black_box(&data), &p, &plans, &limits).unwrap())
        });
        let decoded = stages::decode(&data, &p, &plans, &limits).unwrap();
        group.bench_function("resize 800x600", |b| {
            b.iter(|| stages::resize(black_box(&decoded), &p, plans[4]).unwrap())
        });
        let thumb = stages::resize(&decoded, &p, plans[4]).unwrap();
        let alpha = name.contains("alpha");
        group.bench_function("encode 800x600", |b| {
            b.iter(|| stages::encode(black_box(&thumb), p.format, alpha).unwrap())
        });
        group.bench_function("all 5 sizes", |b| {
            b.iter(|| render_all(black_box(&data), &specs, &limits).unwrap())
        });
        group.finish();
    }
}

criterion_group!(thumbnail, benches);
criterion_main!(thumbnail);
