//! AVIF stills: the HEIF container through mp4parse (Firefox's parser), the AV1 picture
//! through rav1d (dav1d ported to Rust, built without its assembly), YUV to RGB through
//! yuv. Image sequences (`avis`) give their still primary item; grids are unsupported.

use std::io::Cursor;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage, RgbaImage};
use mp4parse::{AvifContext, ImageMirror, ImageRotation, ParseStrictness};
use rav1d::Dav1dResult;
use rav1d::include::dav1d::data::Dav1dData;
use rav1d::include::dav1d::dav1d::{Dav1dContext, Dav1dSettings};
use rav1d::include::dav1d::headers::{
    DAV1D_MC_BT470BG, DAV1D_MC_BT601, DAV1D_MC_BT709, DAV1D_MC_BT2020_CL, DAV1D_MC_BT2020_NCL,
    DAV1D_MC_FCC, DAV1D_MC_IDENTITY, DAV1D_MC_SMPTE240, DAV1D_MC_UNKNOWN, DAV1D_PIXEL_LAYOUT_I400,
    DAV1D_PIXEL_LAYOUT_I420, DAV1D_PIXEL_LAYOUT_I422, DAV1D_PIXEL_LAYOUT_I444,
    Dav1dMatrixCoefficients, Dav1dSequenceHeader,
};
use rav1d::include::dav1d::picture::Dav1dPicture;
use rav1d::src::lib::{
    dav1d_close, dav1d_data_create, dav1d_data_unref, dav1d_default_settings, dav1d_get_picture,
    dav1d_open, dav1d_parse_sequence_header, dav1d_picture_unref, dav1d_send_data,
};
use yuv::{YuvGrayImage, YuvPlanarImage, YuvRange, YuvStandardMatrix};

use super::ThumbnailError;

/// Whether `data` is an ISO-BMFF file whose brands say AVIF (`avif` for stills, `avis`
/// for sequences), as major brand or among the compatible ones.
pub fn is_avif(data: &[u8]) -> bool {
    if data.get(4..8) != Some(b"ftyp") {
        return false;
    }
    let size = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    // Major brand, minor version, then compatible brands to the end of the box.
    let Some(brands) = data.get(8..size.min(data.len())) else {
        return false;
    };
    brands
        .chunks_exact(4)
        .enumerate()
        .any(|(i, brand)| i != 1 && (brand == b"avif" || brand == b"avis"))
}

/// What the headers say, before any decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The largest frame the AV1 sequence header allows, in stored orientation.
    pub width: u32,
    pub height: u32,
    /// The container's rotation and mirroring, as EXIF would say them.
    pub orientation: Orientation,
}

fn container(data: &[u8]) -> Result<AvifContext, ThumbnailError> {
    // Permissive: display what can be displayed, as browsers do.
    mp4parse::read_avif(&mut Cursor::new(data), ParseStrictness::Permissive).map_err(|e| match e {
        mp4parse::Error::Unsupported(_) => ThumbnailError::Unsupported,
        other => ThumbnailError::Decode(format!("AVIF container: {other}")),
    })
}

fn primary(context: &AvifContext) -> Result<&[u8], ThumbnailError> {
    // A sequence without a still image has no primary item.
    context
        .primary_item_coded_data()
        .ok_or(ThumbnailError::Unsupported)
}

pub fn header(data: &[u8]) -> Result<Header, ThumbnailError> {
    let context = container(data)?;
    let sequence = sequence_header(primary(&context)?)?;
    let size = |n: i32| u32::try_from(n).ok().filter(|&n| n > 0);
    let (Some(width), Some(height)) = (size(sequence.max_width), size(sequence.max_height)) else {
        return Err(ThumbnailError::Decode("AVIF image has no pixels".into()));
    };
    Ok(Header {
        width,
        height,
        orientation: orientation(&context)?,
    })
}

/// The embedded ICC profile, if any.
pub fn icc_profile(data: &[u8]) -> Option<Vec<u8>> {
    let context = container(data).ok()?;
    Some(context.icc_colour_information()?.ok()?.to_vec())
}

/// `irot` (anticlockwise quarter turns) then `imir`, the order MIAF prescribes, as one
/// EXIF orientation (what to do to the stored pixels to display them).
fn orientation(context: &AvifContext) -> Result<Orientation, ThumbnailError> {
    let invalid = |e: mp4parse::Error| ThumbnailError::Decode(format!("AVIF container: {e}"));
    let turns = match context.image_rotation().map_err(invalid)? {
        ImageRotation::D0 => 0,
        ImageRotation::D90 => 1,
        ImageRotation::D180 => 2,
        ImageRotation::D270 => 3,
    };
    let mirror = context.image_mirror_ptr().map_err(invalid)?;
    // SAFETY: the pointer is null or points into `context`, which outlives this borrow.
    let mirror = unsafe { mirror.as_ref() };
    // Exchanging top and bottom is exchanging left and right after half a turn.
    let (turns, flip) = match mirror {
        None => (turns, false),
        Some(&ImageMirror::LeftRight) => (turns, true),
        Some(&ImageMirror::TopBottom) => ((turns + 2) % 4, true),
    };
    Ok(match (turns, flip) {
        (0, false) => Orientation::NoTransforms,
        (1, false) => Orientation::Rotate270,
        (2, false) => Orientation::Rotate180,
        (3, false) => Orientation::Rotate90,
        (0, true) => Orientation::FlipHorizontal,
        (1, true) => Orientation::Rotate270FlipH,
        (2, true) => Orientation::FlipVertical,
        _ => Orientation::Rotate90FlipH,
    })
}

fn sequence_header(obus: &[u8]) -> Result<Dav1dSequenceHeader, ThumbnailError> {
    let mut header = MaybeUninit::<Dav1dSequenceHeader>::zeroed();
    // SAFETY: `header` may be written to; the data pointer and length are one slice's.
    let result = unsafe {
        dav1d_parse_sequence_header(
            Some(NonNull::from(&mut header).cast()),
            NonNull::new(obus.as_ptr().cast_mut()),
            obus.len(),
        )
    };
    check(result, "AV1 sequence header")?;
    // SAFETY: a successful call wrote the header.
    Ok(unsafe { header.assume_init() })
}

fn check(result: Dav1dResult, what: &str) -> Result<(), ThumbnailError> {
    match result.0 {
        0 => Ok(()),
        e if e == -libc::ENOMEM => Err(ThumbnailError::TooLarge {
            width: 0,
            height: 0,
        }),
        e => Err(ThumbnailError::Decode(format!("{what}: error {e}"))),
    }
}

/// A decoder context, closed on drop.
struct Decoder(Option<Dav1dContext>);

impl Decoder {
    /// One thread (callers bound the pool), no frame delay (stills), pictures up to
    /// `max_pixels`, no logging to stderr.
    fn open(max_pixels: u64) -> Result<Self, ThumbnailError> {
        let mut settings = MaybeUninit::<Dav1dSettings>::uninit();
        // SAFETY: `dav1d_default_settings` initialises every field.
        let mut settings = unsafe {
            dav1d_default_settings(NonNull::from(&mut settings).cast());
            settings.assume_init()
        };
        settings.n_threads = 1;
        settings.max_frame_delay = 1;
        settings.frame_size_limit = u32::try_from(max_pixels).unwrap_or(u32::MAX);
        // SAFETY: an all-zero logger is the C API's "no callback", which rav1d reads as
        // "do not log"; both of its fields are `Option`s of non-null pointers.
        unsafe { std::ptr::write_bytes(&mut settings.logger, 0, 1) };
        let mut context = None;
        // SAFETY: both pointers are to live locals; `dav1d_open` writes the context.
        let result = unsafe {
            dav1d_open(
                Some(NonNull::from(&mut context)),
                Some(NonNull::from(&mut settings)),
            )
        };
        let decoder = Self(context);
        check(result, "AV1 decoder")?;
        Ok(decoder)
    }

    /// Decode the first picture of `obus`.
    fn picture(&mut self, obus: &[u8]) -> Result<Picture, ThumbnailError> {
        let mut data = Data(Dav1dData::default());
        // SAFETY: `data.0` is a live, empty `Dav1dData`; the returned buffer is `len`
        // bytes long (or null on failure).
        let buffer = unsafe { dav1d_data_create(Some(NonNull::from(&mut data.0)), obus.len()) };
        if buffer.is_null() {
            return Err(ThumbnailError::Decode("AV1 data: cannot allocate".into()));
        }
        // SAFETY: `buffer` holds `obus.len()` writable bytes, disjoint from `obus`.
        unsafe { std::ptr::copy_nonoverlapping(obus.as_ptr(), buffer, obus.len()) };
        let again = -libc::EAGAIN;
        loop {
            if data.0.sz > 0 {
                // SAFETY: the context is open; `data` is a live `Dav1dData`.
                let sent = unsafe { dav1d_send_data(self.0, Some(NonNull::from(&mut data.0))) };
                if sent.0 != again {
                    check(sent, "AV1 data")?;
                }
            }
            let mut picture = Picture(Dav1dPicture::default());
            // SAFETY: the context is open; `picture.0` may be written to.
            let got = unsafe { dav1d_get_picture(self.0, Some(NonNull::from(&mut picture.0))) };
            if got.0 == again {
                if data.0.sz == 0 {
                    return Err(ThumbnailError::Decode("AV1 data: no picture".into()));
                }
                continue;
            }
            check(got, "AV1 picture")?;
            return Ok(picture);
        }
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: the context came from `dav1d_open` (or is None, which is ignored) and
        // is closed once.
        unsafe { dav1d_close(Some(NonNull::from(&mut self.0))) };
    }
}

/// Data not yet consumed by the decoder, released on drop.
struct Data(Dav1dData);

impl Drop for Data {
    fn drop(&mut self) {
        // SAFETY: a live `Dav1dData`, empty or from `dav1d_data_create`.
        unsafe { dav1d_data_unref(Some(NonNull::from(&mut self.0))) };
    }
}

/// A decoded picture, released on drop.
struct Picture(Dav1dPicture);

impl Drop for Picture {
    fn drop(&mut self) {
        // SAFETY: a picture from `dav1d_get_picture` or a default (empty) one.
        unsafe { dav1d_picture_unref(Some(NonNull::from(&mut self.0))) };
    }
}

/// One plane of a picture, 8-bit (deeper pictures are rounded down to 8 bits).
struct Plane<'a> {
    samples: std::borrow::Cow<'a, [u8]>,
    stride: usize,
}

impl Picture {
    fn size(&self) -> (usize, usize) {
        (self.0.p.w.max(0) as usize, self.0.p.h.max(0) as usize)
    }

    /// Plane `index` (0: Y, 1: U, 2: V), `width` x `height` samples.
    fn plane(
        &self,
        index: usize,
        width: usize,
        height: usize,
    ) -> Result<Plane<'_>, ThumbnailError> {
        let bad = || ThumbnailError::Decode("AV1 picture: bad plane".into());
        let pointer = self.0.data[index].ok_or_else(bad)?;
        let stride = usize::try_from(self.0.stride[index.min(1)]).map_err(|_| bad())?;
        let deep = self.0.p.bpc > 8;
        let bytes = if deep { 2 } else { 1 };
        if width == 0 || height == 0 || stride < width * bytes {
            return Err(bad());
        }
        let len = stride * (height - 1) + width * bytes;
        // SAFETY: dav1d's planes hold `height` rows of `stride` bytes (positive strides
        // with its own allocator), alive as long as the picture.
        let raw = unsafe { std::slice::from_raw_parts(pointer.as_ptr().cast::<u8>(), len) };
        if !deep {
            return Ok(Plane {
                samples: raw.into(),
                stride,
            });
        }
        let shift = u32::try_from(self.0.p.bpc - 8).map_err(|_| bad())?;
        let mut samples = Vec::with_capacity(width * height);
        for row in 0..height {
            let row = &raw[row * stride..row * stride + width * 2];
            samples.extend(row.chunks_exact(2).map(|s| {
                let v = u32::from(u16::from_ne_bytes([s[0], s[1]]));
                ((v + (1 << (shift - 1))) >> shift).min(255) as u8
            }));
        }
        Ok(Plane {
            samples: samples.into(),
            stride: width,
        })
    }

    fn full_range(&self) -> Result<bool, ThumbnailError> {
        Ok(self.sequence()?.color_range != 0)
    }

    fn sequence(&self) -> Result<&Dav1dSequenceHeader, ThumbnailError> {
        let header = self
            .0
            .seq_hdr
            .ok_or_else(|| ThumbnailError::Decode("AV1 picture: no sequence header".into()))?;
        // SAFETY: the picture holds a reference on its sequence header.
        Ok(unsafe { header.as_ref() })
    }
}

fn matrix(coefficients: Dav1dMatrixCoefficients) -> Option<YuvStandardMatrix> {
    Some(match coefficients {
        DAV1D_MC_BT709 => YuvStandardMatrix::Bt709,
        // Unspecified is read as BT.601, as libavif does.
        DAV1D_MC_UNKNOWN | DAV1D_MC_BT470BG | DAV1D_MC_BT601 => YuvStandardMatrix::Bt601,
        DAV1D_MC_FCC => YuvStandardMatrix::Fcc,
        DAV1D_MC_SMPTE240 => YuvStandardMatrix::Smpte240,
        DAV1D_MC_BT2020_NCL | DAV1D_MC_BT2020_CL => YuvStandardMatrix::Bt2020,
        _ => return None,
    })
}

/// Decode the primary image (and its alpha image, if any) to 8-bit RGB(A), in stored
/// orientation.
pub fn decode(data: &[u8], max_pixels: u64) -> Result<DynamicImage, ThumbnailError> {
    let context = container(data)?;
    let alpha = context.alpha_item_coded_data();
    let color = Decoder::open(max_pixels)?.picture(primary(&context)?)?;
    let (width, height) = color.size();
    let mut pixels = to_rgb(&color, width, height, alpha.is_some())?;
    drop(color);
    let bad_size = || ThumbnailError::Decode("AVIF: bad size".into());
    let Some(alpha) = alpha else {
        return RgbImage::from_raw(width as u32, height as u32, pixels)
            .map(DynamicImage::ImageRgb8)
            .ok_or_else(bad_size);
    };
    let alpha = Decoder::open(max_pixels)?.picture(alpha)?;
    if alpha.size() != (width, height) {
        return Err(ThumbnailError::Decode("AVIF: alpha of another size".into()));
    }
    let full = alpha.full_range()?;
    let plane = alpha.plane(0, width, height)?;
    for (y, row) in pixels.chunks_exact_mut(width * 4).enumerate() {
        let alphas = &plane.samples[y * plane.stride..y * plane.stride + width];
        for (pixel, &a) in row.chunks_exact_mut(4).zip(alphas) {
            let a = if full {
                a
            } else {
                // Limited range: 16..=235 is transparent..opaque.
                ((i32::from(a) - 16) * 255 / 219).clamp(0, 255) as u8
            };
            if context.premultiplied_alpha && a > 0 {
                let a = u32::from(a);
                for c in &mut pixel[..3] {
                    *c = ((u32::from(*c) * 255 + a / 2) / a).min(255) as u8;
                }
            }
            pixel[3] = a;
        }
    }
    RgbaImage::from_raw(width as u32, height as u32, pixels)
        .map(DynamicImage::ImageRgba8)
        .ok_or_else(bad_size)
}

type Convert = fn(
    &YuvPlanarImage<u8>,
    &mut [u8],
    u32,
    YuvRange,
    YuvStandardMatrix,
) -> Result<(), yuv::YuvError>;

/// The picture as interleaved RGB, or RGBA (opaque, for the alpha image to fill in).
fn to_rgb(
    picture: &Picture,
    width: usize,
    height: usize,
    rgba: bool,
) -> Result<Vec<u8>, ThumbnailError> {
    let sequence = picture.sequence()?;
    let range = if sequence.color_range != 0 {
        YuvRange::Full
    } else {
        YuvRange::Limited
    };
    let layout = picture.0.p.layout;
    let channels = if rgba { 4 } else { 3 };
    let mut out = vec![0u8; width * height * channels];
    let (w, h) = (width as u32, height as u32);
    let stride = w * channels as u32;
    let failed = |e: yuv::YuvError| ThumbnailError::Decode(format!("AVIF colours: {e}"));
    let y = picture.plane(0, width, height)?;
    if layout == DAV1D_PIXEL_LAYOUT_I400 {
        let gray = YuvGrayImage {
            y_plane: &y.samples,
            y_stride: y.stride as u32,
            width: w,
            height: h,
        };
        let matrix = matrix(sequence.mtrx).unwrap_or(YuvStandardMatrix::Bt601);
        let convert = if rgba {
            yuv::yuv400_to_rgba
        } else {
            yuv::yuv400_to_rgb
        };
        convert(&gray, &mut out, stride, range, matrix).map_err(failed)?;
        return Ok(out);
    }
    let [i420, i422, i444]: [Convert; 3] = if rgba {
        [
            yuv::yuv420_to_rgba,
            yuv::yuv422_to_rgba,
            yuv::yuv444_to_rgba,
        ]
    } else {
        [yuv::yuv420_to_rgb, yuv::yuv422_to_rgb, yuv::yuv444_to_rgb]
    };
    let (convert, (cw, ch)) = match layout {
        DAV1D_PIXEL_LAYOUT_I420 => (i420, (width.div_ceil(2), height.div_ceil(2))),
        DAV1D_PIXEL_LAYOUT_I422 => (i422, (width.div_ceil(2), height)),
        DAV1D_PIXEL_LAYOUT_I444 => (i444, (width, height)),
        _ => return Err(ThumbnailError::Unsupported),
    };
    let (u, v) = (picture.plane(1, cw, ch)?, picture.plane(2, cw, ch)?);
    let planar = YuvPlanarImage {
        y_plane: &y.samples,
        y_stride: y.stride as u32,
        u_plane: &u.samples,
        u_stride: u.stride as u32,
        v_plane: &v.samples,
        v_stride: v.stride as u32,
        width: w,
        height: h,
    };
    if sequence.mtrx == DAV1D_MC_IDENTITY {
        // RGB stored as G, B, R planes (lossless AVIF); only without subsampling.
        if layout != DAV1D_PIXEL_LAYOUT_I444 {
            return Err(ThumbnailError::Unsupported);
        }
        let convert = if rgba {
            yuv::gbr_to_rgba
        } else {
            yuv::gbr_to_rgb
        };
        convert(&planar, &mut out, stride, range).map_err(failed)?;
        return Ok(out);
    }
    let matrix = matrix(sequence.mtrx).ok_or(ThumbnailError::Unsupported)?;
    convert(&planar, &mut out, stride, range, matrix).map_err(failed)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use image::{DynamicImage, GenericImageView, ImageFormat, Rgb, RgbImage};

    use super::super::decode::{Limits, Probe, decode, probe};
    use super::super::{Rendered, ThumbnailError, render_all};
    use super::*;
    use crate::domain::{Method, ThumbnailSpec};

    fn specs() -> Vec<ThumbnailSpec> {
        [(32, 32, Method::Crop), (320, 240, Method::Scale)]
            .map(|(w, h, m)| ThumbnailSpec::new(w, h, m).unwrap())
            .to_vec()
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/avif/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// What `make.py` draws: four quadrants of 24x16.
    const COLOURS: [[u8; 3]; 4] = [[220, 40, 40], [40, 200, 60], [40, 60, 220], [240, 240, 240]];

    fn quadrants() -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(48, 32, |x, y| {
            Rgb(COLOURS[usize::from(y >= 16) * 2 + usize::from(x >= 24)])
        }))
    }

    /// The colour at the centre of each quadrant of `image`.
    fn centres(image: &DynamicImage) -> [[u8; 4]; 4] {
        let (w, h) = (image.width(), image.height());
        let rgba = image.to_rgba8();
        [(1, 1), (3, 1), (1, 3), (3, 3)].map(|(fx, fy)| rgba.get_pixel(w * fx / 4, h * fy / 4).0)
    }

    fn assert_near(actual: [u8; 4], expected: [u8; 4], what: &str) {
        let off = actual
            .iter()
            .zip(expected)
            .map(|(&a, e)| a.abs_diff(e))
            .max()
            .unwrap();
        assert!(off <= 12, "{what}: {actual:?}, expected {expected:?}");
    }

    fn decoded(name: &str) -> (Probe, DynamicImage) {
        let data = fixture(name);
        let limits = Limits::default();
        let probe = probe(&data, &limits).unwrap();
        let image = decode(&data, &probe, (probe.width, probe.height), &limits).unwrap();
        (probe, image)
    }

    #[test]
    fn decodes_every_layout_range_and_depth() {
        for name in [
            "yuv420.avif",
            "yuv422-limited.avif",
            "yuv444.avif",
            "yuv420-10bit.avif",
        ] {
            let (probe, image) = decoded(name);
            assert_eq!(probe.format, ImageFormat::Avif, "{name}");
            assert_eq!((probe.width, probe.height), (48, 32), "{name}");
            assert!(matches!(image, DynamicImage::ImageRgb8(_)), "{name}");
            for (got, [r, g, b]) in centres(&image).into_iter().zip(COLOURS) {
                assert_near(got, [r, g, b, 255], name);
            }
        }
    }

    #[test]
    fn decodes_monochrome() {
        let (_, image) = decoded("gray.avif");
        // BT.601 luma of each quadrant's colour.
        for (got, [r, g, b]) in centres(&image).into_iter().zip(COLOURS) {
            let luma = (0.299 * f64::from(r) + 0.587 * f64::from(g) + 0.114 * f64::from(b)) as u8;
            assert_near(got, [luma, luma, luma, 255], "gray");
        }
    }

    #[test]
    fn keeps_the_alpha_image() {
        let (_, image) = decoded("alpha.avif");
        assert!(matches!(image, DynamicImage::ImageRgba8(_)));
        let got = centres(&image);
        // The left half is transparent, the right half keeps its colours.
        assert_eq!((got[0][3], got[2][3]), (0, 0));
        let [r, g, b] = COLOURS[1];
        assert_near(got[1], [r, g, b, 255], "top right");
        let [r, g, b] = COLOURS[3];
        assert_near(got[3], [r, g, b, 255], "bottom right");
    }

    #[test]
    fn applies_rotation_and_mirroring_as_exif_would() {
        for exif in 2..=8 {
            let name = format!("orientation-{exif}.avif");
            let (probe, image) = decoded(&name);
            let mut expected = quadrants();
            expected.apply_orientation(Orientation::from_exif(exif).unwrap());
            assert_eq!(
                (probe.width, probe.height),
                (expected.width(), expected.height()),
                "{name}"
            );
            assert_eq!(image.dimensions(), expected.dimensions(), "{name}");
            for (got, want) in centres(&image).into_iter().zip(centres(&expected)) {
                assert_near(got, want, &name);
            }
        }
    }

    #[test]
    fn thumbnails_are_jpeg_when_opaque_and_png_with_alpha() {
        for (name, content_type) in [("yuv420.avif", "image/jpeg"), ("alpha.avif", "image/png")] {
            let (_, rendered) = render_all(&fixture(name), &specs(), &Limits::default()).unwrap();
            // AVIF is not for every client: even the size that fits is re-encoded.
            let sizes: Vec<_> = rendered
                .iter()
                .map(|r| match r {
                    Rendered::Thumbnail(t) => {
                        assert_eq!(t.content_type, content_type, "{name}");
                        let image = image::load_from_memory(&t.bytes).unwrap();
                        assert_eq!(image.dimensions(), (t.width, t.height), "{name}");
                        (t.width, t.height)
                    }
                    Rendered::Original => panic!("{name}: the original served as a thumbnail"),
                })
                .collect();
            assert_eq!(sizes, [(32, 32), (48, 32)], "{name}");
        }
    }

    #[test]
    fn tells_avif_from_other_files_by_its_brands() {
        assert!(is_avif(&fixture("yuv420.avif")));
        // An AVIF brand among the compatible ones, after another major brand.
        let mut mif1 = b"\0\0\0\x18ftypmif1\0\0\0\0mif1avif".to_vec();
        assert!(is_avif(&mif1));
        // The minor version is not a brand; MP4s and short files are not AVIF.
        mif1[12..16].copy_from_slice(b"avif");
        mif1[20..24].copy_from_slice(b"heic");
        assert!(!is_avif(&mif1));
        assert!(!is_avif(b"\0\0\0\x18ftypisom\0\0\0\0isomiso2"));
        assert!(!is_avif(b"\0\0\0\x18ftyp"));
        assert!(!is_avif(b"\x89PNG\r\n\x1a\n"));
    }

    #[test]
    fn checks_the_size_before_decoding() {
        let limits = Limits {
            max_pixels: 48 * 32 - 1,
            ..Limits::default()
        };
        assert_eq!(
            probe(&fixture("yuv420.avif"), &limits),
            Err(ThumbnailError::TooLarge {
                width: 48,
                height: 32
            })
        );
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let data = fixture("alpha.avif");
        let limits = Limits::default();
        for cut in (0..data.len()).step_by(7) {
            let _ = render_all(&data[..cut], &specs(), &limits);
        }
        // The coded pictures overwritten: the container reads, the pictures do not.
        let mut garbled = data.clone();
        let len = garbled.len();
        for (i, byte) in garbled[len - 200..].iter_mut().enumerate() {
            *byte = (i * 37) as u8;
        }
        assert!(render_all(&garbled, &specs(), &limits).is_err());
    }
}
