//! Unit tests on images generated in memory.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

use super::*;
use crate::domain::Method;

/// A photo-like test image: gradients plus texture.
fn photo(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 27;
        Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            (((x + y) * 3) as u8) ^ (n as u8),
        ])
    })
}

/// Smooth content (no texture above the thumbnail's resolution).
fn smooth(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let fx = f64::from(x) / f64::from(w) * std::f64::consts::TAU;
        let fy = f64::from(y) / f64::from(h) * std::f64::consts::TAU;
        Rgb([
            (127.0 + 120.0 * fx.sin()) as u8,
            (127.0 + 120.0 * fy.cos()) as u8,
            (x * 255 / w) as u8,
        ])
    })
}

fn jpeg_with_exif(img: &RgbImage, exif: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 90);
    if let Some(exif) = exif {
        enc.add_exif_metadata(exif).unwrap();
    }
    enc.encode(
        img.as_raw(),
        img.width() as u16,
        img.height() as u16,
        jpeg_encoder::ColorType::Rgb,
    )
    .unwrap();
    out
}

fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn spec(w: u32, h: u32, m: Method) -> ThumbnailSpec {
    ThumbnailSpec::new(w, h, m).unwrap()
}

fn thumb(r: &Rendered) -> &Thumbnail {
    match r {
        Rendered::Thumbnail(t) => t,
        Rendered::Original => panic!("expected a thumbnail"),
    }
}

fn decoded(t: &Thumbnail) -> DynamicImage {
    image::load_from_memory(&t.bytes).unwrap()
}

const RECOMMENDED: [(u32, u32, Method); 5] = [
    (32, 32, Method::Crop),
    (96, 96, Method::Crop),
    (320, 240, Method::Scale),
    (640, 480, Method::Scale),
    (800, 600, Method::Scale),
];

fn recommended() -> Vec<ThumbnailSpec> {
    RECOMMENDED.iter().map(|&(w, h, m)| spec(w, h, m)).collect()
}

#[test]
fn recommended_sizes_of_landscape_portrait_and_square() {
    let cases = [
        (
            (1600, 1000),
            [(32, 32), (96, 96), (320, 200), (640, 400), (800, 500)],
        ),
        (
            (1000, 1600),
            [(32, 32), (96, 96), (150, 240), (300, 480), (375, 600)],
        ),
        (
            (1200, 1200),
            [(32, 32), (96, 96), (240, 240), (480, 480), (600, 600)],
        ),
    ];
    for ((w, h), expected) in cases {
        let data = jpeg_with_exif(&photo(w, h), None);
        let out = render_all(&data, &recommended(), &Limits::default())
            .unwrap()
            .1;
        for (r, (ew, eh)) in out.iter().zip(expected) {
            let t = thumb(r);
            assert_eq!((t.width, t.height), (ew, eh), "{w}x{h}");
            assert_eq!(t.content_type, "image/jpeg");
            let img = decoded(t);
            assert_eq!(
                (img.width(), img.height()),
                (ew, eh),
                "the encoded image has the reported size"
            );
        }
    }
}

#[test]
fn small_sources_are_served_as_they_are() {
    let data = encode(DynamicImage::ImageRgb8(photo(300, 200)), ImageFormat::Png);
    let out = render_all(&data, &recommended(), &Limits::default())
        .unwrap()
        .1;
    // 300x200 is bigger than 32x32 and 96x96 (crops), but fits 320x240 and up.
    assert!(matches!(out[0], Rendered::Thumbnail(_)));
    assert!(matches!(out[1], Rendered::Thumbnail(_)));
    assert_eq!(
        &out[2..],
        &[Rendered::Original, Rendered::Original, Rendered::Original]
    );
}

#[test]
fn alpha_is_kept_as_png() {
    let img = RgbaImage::from_fn(400, 300, |x, y| {
        Rgba([x as u8, y as u8, 128, if x < 200 { 0 } else { 255 }])
    });
    let data = encode(DynamicImage::ImageRgba8(img), ImageFormat::Png);
    let out = render_all(&data, &[spec(100, 100, Method::Scale)], &Limits::default())
        .unwrap()
        .1;
    let t = thumb(&out[0]);
    assert_eq!(t.content_type, "image/png");
    let back = decoded(t).to_rgba8();
    assert_eq!(
        back.get_pixel(2, 10).0[3],
        0,
        "transparent half stays transparent"
    );
    assert_eq!(back.get_pixel(97, 10).0[3], 255);
}

#[test]
fn lossless_sources_give_png_lossy_ones_jpeg() {
    // Opaque RGBA: an alpha channel with nothing in it gives a PNG without one.
    let img = DynamicImage::ImageRgb8(photo(400, 300)).to_rgba8();
    let png = encode(DynamicImage::ImageRgba8(img.clone()), ImageFormat::Png);
    let gif = encode(DynamicImage::ImageRgba8(img.clone()), ImageFormat::Gif);
    let rgb = DynamicImage::ImageRgba8(img).to_rgb8();
    let jpeg = encode(DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Jpeg);
    let webp = encode(DynamicImage::ImageRgb8(rgb), ImageFormat::WebP);
    for (data, expected) in [
        (png, "image/png"),
        (gif, "image/png"),
        (jpeg, "image/jpeg"),
        (webp, "image/jpeg"),
    ] {
        let out = render_all(&data, &[spec(100, 100, Method::Scale)], &Limits::default())
            .unwrap()
            .1;
        let t = thumb(&out[0]);
        assert_eq!(t.content_type, expected);
        if expected == "image/png" {
            let back = image::load_from_memory(&t.bytes).unwrap();
            assert_eq!(
                back.color(),
                image::ColorType::Rgb8,
                "no empty alpha channel"
            );
        }
    }
}

#[test]
fn exif_orientation_is_applied() {
    // Stored 400x200 (wide), tagged "rotate 90° clockwise" (orientation 6): displays 200x400.
    let exif: &[u8] = &[
        b'M', b'M', 0, 42, 0, 0, 0, 8, // TIFF header, IFD at offset 8
        0, 1, // one entry
        0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, // Orientation = 6
        0, 0, 0, 0, // no next IFD
    ];
    let data = jpeg_with_exif(&photo(400, 200), Some(exif));
    assert_eq!(probe(&data, &Limits::default()).unwrap().width, 200);
    let out = render_all(&data, &[spec(100, 100, Method::Scale)], &Limits::default())
        .unwrap()
        .1;
    let t = thumb(&out[0]);
    assert_eq!((t.width, t.height), (50, 100));
}

#[test]
fn crop_takes_the_centre() {
    // Left third red, middle green, right third blue: a square crop is all green.
    let img = RgbImage::from_fn(900, 300, |x, _| match x {
        0..300 => Rgb([255, 0, 0]),
        300..600 => Rgb([0, 255, 0]),
        _ => Rgb([0, 0, 255]),
    });
    let data = encode(DynamicImage::ImageRgb8(img), ImageFormat::Png);
    let out = render_all(&data, &[spec(30, 30, Method::Crop)], &Limits::default())
        .unwrap()
        .1;
    let back = decoded(thumb(&out[0])).to_rgb8();
    for (x, y) in [(0, 0), (29, 29), (15, 15)] {
        let p = back.get_pixel(x, y).0;
        assert!(
            p[1] > 200 && p[0] < 60 && p[2] < 60,
            "pixel {x},{y} = {p:?}"
        );
    }
}

#[test]
fn output_is_deterministic() {
    let data = jpeg_with_exif(&photo(1000, 700), None);
    let a = render_all(&data, &recommended(), &Limits::default())
        .unwrap()
        .1;
    let b = render_all(&data, &recommended(), &Limits::default())
        .unwrap()
        .1;
    assert_eq!(a, b);
}

#[test]
fn formats_other_than_jpeg_and_png() {
    let img = DynamicImage::ImageRgb8(photo(500, 400));
    for format in [
        ImageFormat::Gif,
        ImageFormat::Bmp,
        ImageFormat::Tiff,
        ImageFormat::WebP,
    ] {
        let data = encode(img.clone(), format);
        let out = render_all(&data, &[spec(96, 96, Method::Crop)], &Limits::default())
            .unwrap()
            .1;
        let t = thumb(&out[0]);
        assert_eq!((t.width, t.height), (96, 96), "{format:?}");
    }
}

#[test]
fn decompression_bombs_are_refused_from_the_header() {
    // A 58-byte BMP that declares 60000 x 60000 pixels.
    let mut bmp = Vec::new();
    bmp.extend_from_slice(b"BM");
    bmp.extend_from_slice(&58u32.to_le_bytes());
    bmp.extend_from_slice(&[0, 0, 0, 0]);
    bmp.extend_from_slice(&54u32.to_le_bytes());
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&60_000i32.to_le_bytes());
    bmp.extend_from_slice(&60_000i32.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0; 24]);
    bmp.extend_from_slice(&[0; 4]);
    let err = render_all(&bmp, &recommended(), &Limits::default()).unwrap_err();
    assert_eq!(
        err,
        ThumbnailError::TooLarge {
            width: 60_000,
            height: 60_000
        }
    );
}

#[test]
fn garbage_and_truncated_data_are_errors() {
    assert_eq!(
        render_all(b"hello world", &recommended(), &Limits::default()).unwrap_err(),
        ThumbnailError::Unsupported
    );
    assert_eq!(
        render_all(
            b"<svg xmlns='http://www.w3.org/2000/svg'/>",
            &recommended(),
            &Limits::default()
        )
        .unwrap_err(),
        ThumbnailError::Unsupported
    );
    let png = encode(DynamicImage::ImageRgb8(photo(300, 300)), ImageFormat::Png);
    let err = render_all(&png[..png.len() / 2], &recommended(), &Limits::default()).unwrap_err();
    assert!(matches!(err, ThumbnailError::Decode(_)), "{err:?}");
}

/// Mean channel difference between `data` thumbnailed to 300x200 and the fully decoded
/// image resized with the same filter.
fn difference_from_full_decode(data: &[u8]) -> f64 {
    let fast = render_all(data, &[spec(300, 200, Method::Scale)], &Limits::default())
        .unwrap()
        .1;
    let fast = decoded(thumb(&fast[0])).to_rgb8();
    let reference = image::imageops::resize(
        &image::load_from_memory(data).unwrap().to_rgb8(),
        300,
        200,
        image::imageops::FilterType::Lanczos3,
    );
    let diff: u64 = fast
        .as_raw()
        .iter()
        .zip(reference.as_raw())
        .map(|(a, b)| u64::from(a.abs_diff(*b)))
        .sum();
    diff as f64 / fast.as_raw().len() as f64
}

#[test]
fn shrink_on_load_matches_a_full_decode_closely() {
    let src = smooth(2400, 1600);
    let jpeg = difference_from_full_decode(&jpeg_with_exif(&src, None));
    assert!(jpeg < 3.0, "JPEG: mean channel difference {jpeg}");
    // PNG is averaged down by 4 while decoding (2400 / (300 x 2)).
    let png = difference_from_full_decode(&encode(DynamicImage::ImageRgb8(src), ImageFormat::Png));
    assert!(png < 3.0, "PNG: mean channel difference {png}");
}

#[test]
fn memory_estimates_follow_what_is_decoded() {
    let limits = Limits::default();
    let small = [spec(320, 240, Method::Scale)];
    let full = [spec(1600, 1600, Method::Scale)];
    let src = DynamicImage::ImageRgb8(smooth(2400, 1600));
    let frame = 2400 * 1600 * 3;
    // A large PNG is averaged down while decoding: its frame is never held.
    let png = encode(src.clone(), ImageFormat::Png);
    let source = png.len() as u64 + FIXED_MEMORY;
    assert!(memory_estimate(&png, &small, &limits).unwrap() < source + frame / 2);
    assert!(memory_estimate(&png, &full, &limits).unwrap() > source + frame);
    // Baseline JPEG at 1/4 scale holds only the scaled planes; progressive would hold
    // every coefficient, but the encoder here writes baseline.
    let jpeg = jpeg_with_exif(&src.to_rgb8(), None);
    let source = jpeg.len() as u64 + FIXED_MEMORY;
    assert!(memory_estimate(&jpeg, &small, &limits).unwrap() < source + frame / 2);
    assert!(memory_estimate(&jpeg, &full, &limits).unwrap() > source + frame);
    // Files refused from the header are refused here too.
    assert!(matches!(
        memory_estimate(b"not an image", &small, &limits),
        Err(ThumbnailError::Unsupported)
    ));
}

#[test]
fn small_non_web_formats_are_re_encoded_not_served_as_is() {
    let data = encode(DynamicImage::ImageRgb8(photo(60, 40)), ImageFormat::Bmp);
    let (probe, out) =
        render_all(&data, &[spec(96, 96, Method::Crop)], &Limits::default()).unwrap();
    assert_eq!((probe.width, probe.height), (60, 40));
    let t = thumb(&out[0]);
    assert_eq!((t.width, t.height, t.content_type), (60, 40, "image/png"));
}

/// 4 frames of 240x180, 80 ms each, looping forever (made with Pillow).
const ANIMATED_GIF: &[u8] = include_bytes!("../../tests/fixtures/animated-4x80ms.gif");

/// Frame count, per-frame delays (ms) and size of an animated WebP.
fn webp_frames(data: &[u8]) -> (usize, Vec<u32>, (u32, u32)) {
    use image::AnimationDecoder;
    use image::codecs::webp::WebPDecoder;
    let frames = WebPDecoder::new(Cursor::new(data))
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    let delays = frames
        .iter()
        .map(|f| f.delay().numer_denom_ms().0 / f.delay().numer_denom_ms().1)
        .collect();
    let size = frames[0].buffer().dimensions();
    (frames.len(), delays, size)
}

#[test]
fn animated_gifs_become_animated_webp_with_their_timing() {
    let out = render_animated(ANIMATED_GIF, spec(96, 96, Method::Crop), &Limits::default())
        .unwrap()
        .unwrap();
    let t = thumb(&out);
    assert_eq!((t.content_type, t.width, t.height), ("image/webp", 96, 96));
    let (count, delays, size) = webp_frames(&t.bytes);
    assert_eq!(size, (96, 96));
    assert_eq!(count, 4, "every frame kept; delays {delays:?}");
    assert_eq!(delays, [80, 80, 80, 80], "frame timing kept");
}

#[test]
fn still_images_have_no_animated_thumbnail() {
    let png = encode(DynamicImage::ImageRgb8(photo(300, 200)), ImageFormat::Png);
    assert_eq!(
        render_animated(&png, spec(96, 96, Method::Crop), &Limits::default()).unwrap(),
        None
    );
    let one_frame = encode(DynamicImage::ImageRgb8(photo(300, 200)), ImageFormat::Gif);
    assert_eq!(
        render_animated(&one_frame, spec(96, 96, Method::Crop), &Limits::default()).unwrap(),
        None
    );
}

#[test]
fn too_many_animation_pixels_are_refused() {
    let limits = Limits {
        max_animation_pixels: 240 * 180 * 3,
        ..Limits::default()
    };
    let err = render_animated(ANIMATED_GIF, spec(96, 96, Method::Crop), &limits).unwrap_err();
    assert!(matches!(err, ThumbnailError::TooLarge { .. }), "{err:?}");
}

#[test]
fn small_animations_are_served_as_they_are() {
    let out = render_animated(
        ANIMATED_GIF,
        spec(800, 600, Method::Scale),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(out, Some(Rendered::Original));
}

#[test]
fn icc_tagged_images_are_converted_to_srgb() {
    use moxcms::{ColorProfile, Layout, TransformOptions};
    let colour = [180u8, 120, 60];
    let flat = RgbImage::from_pixel(400, 300, Rgb(colour));
    let prophoto = ColorProfile::new_pro_photo_rgb();
    let icc = prophoto.encode().unwrap();
    let mut tagged = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut tagged, 95);
    enc.add_icc_profile(&icc).unwrap();
    enc.encode(flat.as_raw(), 400, 300, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    let untagged = jpeg_with_exif(&flat, None);

    // What a colour-managed viewer shows for that ProPhoto colour, in sRGB.
    let transform = prophoto
        .create_transform_8bit(
            Layout::Rgb,
            &ColorProfile::new_srgb(),
            Layout::Rgb,
            TransformOptions::default(),
        )
        .unwrap();
    let mut expected = [0u8; 3];
    transform.transform(&colour, &mut expected).unwrap();
    assert!(
        expected.iter().zip(colour).any(|(a, b)| a.abs_diff(b) > 20),
        "ProPhoto differs visibly: {expected:?}"
    );

    let centre = |data: &[u8]| {
        let out = render_all(data, &[spec(100, 100, Method::Scale)], &Limits::default())
            .unwrap()
            .1;
        decoded(thumb(&out[0])).to_rgb8().get_pixel(50, 37).0
    };
    let close = |a: [u8; 3], b: [u8; 3]| a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 6);
    let got = centre(&tagged);
    assert!(
        close(got, expected),
        "tagged: got {got:?}, expected {expected:?}"
    );
    let got = centre(&untagged);
    assert!(close(got, colour), "untagged stays as it is: got {got:?}");
}

#[test]
fn cmyk_jpeg_and_16_bit_png_are_handled() {
    let mut cmyk = Vec::new();
    let pixels: Vec<u8> = (0..400 * 300)
        .flat_map(|i| [0u8, 0, 0, (i % 7) as u8])
        .collect();
    jpeg_encoder::Encoder::new(&mut cmyk, 90)
        .encode(&pixels, 400, 300, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
    let out = render_all(&cmyk, &[spec(100, 100, Method::Scale)], &Limits::default())
        .unwrap()
        .1;
    let t = thumb(&out[0]);
    assert_eq!((t.width, t.height, t.content_type), (100, 75, "image/jpeg"));
    let p = decoded(t).to_rgb8().get_pixel(50, 37).0;
    assert!(p.iter().all(|c| *c > 200), "no ink is white-ish, got {p:?}");

    let wide = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(400, 300, |x, y| {
        image::Rgb([(x * 160) as u16, (y * 200) as u16, 40_000])
    });
    let png16 = encode(DynamicImage::ImageRgb16(wide), ImageFormat::Png);
    let out = render_all(&png16, &[spec(100, 100, Method::Scale)], &Limits::default())
        .unwrap()
        .1;
    assert_eq!((thumb(&out[0]).width, thumb(&out[0]).height), (100, 75));
}
