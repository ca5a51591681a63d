//! Header probing and bounded decoding.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::ThumbnailError;

/// Bounds on what is decoded.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest width x height decoded; checked from the header, before decoding.
    pub max_pixels: u64,
    /// Frames x canvas pixels decoded for one animated thumbnail.
    pub max_animation_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pixels: 32_000_000,
            max_animation_pixels: 400_000_000,
        }
    }
}

/// What the header says: format and size after EXIF orientation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    pub orientation: Orientation,
}

const SUPPORTED: &[ImageFormat] = &[
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::Gif,
    ImageFormat::WebP,
    ImageFormat::Bmp,
    ImageFormat::Tiff,
];

fn decode_error(e: image::ImageError) -> ThumbnailError {
    match e {
        image::ImageError::Unsupported(_) => ThumbnailError::Unsupported,
        image::ImageError::Limits(_) => ThumbnailError::TooLarge {
            width: 0,
            height: 0,
        },
        other => ThumbnailError::Decode(other.to_string()),
    }
}

fn reader<'a>(
    data: &'a [u8],
    limits: &Limits,
) -> Result<ImageReader<Cursor<&'a [u8]>>, ThumbnailError> {
    let mut reader = ImageReader::new(Cursor::new(data))
        .with_guessed_format()
        .map_err(|e| ThumbnailError::Decode(e.to_string()))?;
    match reader.format() {
        Some(f) if SUPPORTED.contains(&f) => {}
        _ => return Err(ThumbnailError::Unsupported),
    }
    reader.limits(image_limits(limits));
    Ok(reader)
}

fn image_limits(limits: &Limits) -> image::Limits {
    let mut l = image::Limits::default();
    // Room for the decoded frame at 16 bits per channel RGBA, plus decoder state.
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    l
}

/// Read format, size and orientation from the header only, and enforce `max_pixels`.
pub fn probe(data: &[u8], limits: &Limits) -> Result<Probe, ThumbnailError> {
    let (format, (w, h), orientation) = if super::avif::is_avif(data) {
        let header = super::avif::header(data)?;
        (
            ImageFormat::Avif,
            (header.width, header.height),
            header.orientation,
        )
    } else {
        let reader = reader(data, limits)?;
        let format = reader.format().ok_or(ThumbnailError::Unsupported)?;
        let mut decoder = reader.into_decoder().map_err(decode_error)?;
        let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
        (format, decoder.dimensions(), orientation)
    };
    if w == 0 || h == 0 {
        return Err(ThumbnailError::Decode("image has no pixels".into()));
    }
    if u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err(ThumbnailError::TooLarge {
            width: w,
            height: h,
        });
    }
    let (width, height) = if swaps_axes(orientation) {
        (h, w)
    } else {
        (w, h)
    };
    Ok(Probe {
        format,
        width,
        height,
        orientation,
    })
}

fn swaps_axes(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// Decode to 8-bit RGB(A), oriented, at least `needed` (oriented) pixels large where the
/// format can shrink while decoding.
pub fn decode(
    data: &[u8],
    probe: &Probe,
    needed: (u32, u32),
    limits: &Limits,
) -> Result<DynamicImage, ThumbnailError> {
    let mut image = match probe.format {
        ImageFormat::Jpeg => decode_jpeg_scaled(data, probe, needed)?,
        ImageFormat::WebP => decode_webp(data, probe, needed),
        ImageFormat::Png => decode_png_shrunk(data, probe, needed)?,
        ImageFormat::Avif => Some(super::avif::decode(data, limits.max_pixels)?),
        _ => None,
    }
    .map_or_else(|| decode_full(data, limits), Ok)?;
    image.apply_orientation(probe.orientation);
    Ok(match image {
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => image,
        other if other.color().has_alpha() => DynamicImage::ImageRgba8(other.to_rgba8()),
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    })
}

fn decode_full(data: &[u8], limits: &Limits) -> Result<DynamicImage, ThumbnailError> {
    let reader = reader(data, limits)?;
    let decoder = reader.into_decoder().map_err(decode_error)?;
    DynamicImage::from_decoder(decoder).map_err(decode_error)
}

/// JPEG DCT scaling by n/8: most of a large photo is never fully decoded. None where
/// libjpeg's path does not apply (CMYK, YCCK).
fn decode_jpeg_scaled(
    data: &[u8],
    probe: &Probe,
    needed: (u32, u32),
) -> Result<Option<DynamicImage>, ThumbnailError> {
    // `needed` is in oriented pixels; the decoder works in stored orientation.
    let ((nw, nh), (sw, sh)) = stored_sizes(probe, needed);
    let scale = super::jpeg::scale_for(sw, sh, (nw, nh));
    // Progressive files: only the coefficients this scale uses (see `progressive`).
    match super::progressive::decode_scaled(data, scale) {
        Ok(Some(image)) => return Ok(Some(image)),
        Ok(None) => {}
        // libjpeg has the last word on what is broken.
        Err(e) => tracing::debug!(error = %e, "progressive decoder failed; trying libjpeg"),
    }
    super::jpeg::decode_scaled(data, scale)
}

/// Large PNGs are averaged down while decoding, row by row (see `png_shrink`).
fn decode_png_shrunk(
    data: &[u8],
    probe: &Probe,
    needed: (u32, u32),
) -> Result<Option<DynamicImage>, ThumbnailError> {
    let ((nw, nh), (sw, sh)) = stored_sizes(probe, needed);
    match super::png_shrink::factor(sw, sh, (nw, nh)) {
        Some(k) => super::png_shrink::decode(data, k),
        None => Ok(None),
    }
}

/// `needed` and the source's size, in stored orientation.
fn stored_sizes(probe: &Probe, needed: (u32, u32)) -> ((u32, u32), (u32, u32)) {
    (
        stored(probe, needed),
        stored(probe, (probe.width, probe.height)),
    )
}

/// Oriented sizes (what callers ask in) turned into stored ones (what decoders see).
fn stored(probe: &Probe, (w, h): (u32, u32)) -> (u32, u32) {
    if swaps_axes(probe.orientation) {
        (h, w)
    } else {
        (w, h)
    }
}

/// Still WebP through libwebp, scaled while decoding (like JPEG's DCT scaling) to what
/// the thumbnails need. None for animations and anything libwebp refuses; those take the
/// general path.
fn decode_webp(data: &[u8], probe: &Probe, needed: (u32, u32)) -> Option<DynamicImage> {
    use libwebp_sys as sys;
    let (nw, nh) = stored(probe, needed);
    // SAFETY: the config is initialised by libwebp; the output buffer is ours, exactly
    // width x height x bytes-per-pixel long with the stride given, and outlives the call;
    // WebPFreeDecBuffer releases only libwebp's own allocations.
    unsafe {
        let mut config = std::mem::MaybeUninit::<sys::WebPDecoderConfig>::uninit();
        if !sys::WebPInitDecoderConfig(config.as_mut_ptr()) {
            return None;
        }
        let mut config = config.assume_init();
        if sys::WebPGetFeatures(data.as_ptr(), data.len(), &mut config.input)
            != sys::VP8StatusCode::VP8_STATUS_OK
            || config.input.has_animation != 0
        {
            return None;
        }
        let (sw, sh) = (
            u32::try_from(config.input.width).ok()?,
            u32::try_from(config.input.height).ok()?,
        );
        let (w, h) = if nw < sw && nh < sh {
            config.options.use_scaling = 1;
            config.options.scaled_width = i32::try_from(nw.max(1)).ok()?;
            config.options.scaled_height = i32::try_from(nh.max(1)).ok()?;
            (nw.max(1), nh.max(1))
        } else {
            (sw, sh)
        };
        let alpha = config.input.has_alpha != 0;
        let bpp: usize = if alpha { 4 } else { 3 };
        let mut pixels = vec![0u8; w as usize * h as usize * bpp];
        config.output.colorspace = if alpha {
            sys::WEBP_CSP_MODE::MODE_RGBA
        } else {
            sys::WEBP_CSP_MODE::MODE_RGB
        };
        config.output.is_external_memory = 1;
        config.output.u.RGBA = sys::WebPRGBABuffer {
            rgba: pixels.as_mut_ptr(),
            stride: i32::try_from(w as usize * bpp).ok()?,
            size: pixels.len(),
        };
        let status = sys::WebPDecode(data.as_ptr(), data.len(), &mut config);
        sys::WebPFreeDecBuffer(&mut config.output);
        if status != sys::VP8StatusCode::VP8_STATUS_OK {
            return None;
        }
        if alpha {
            image::RgbaImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgba8)
        } else {
            image::RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
        }
    }
}

/// Roughly the most memory `decode(data, probe, needed)` holds at once, in bytes, and
/// the size of what it returns, judged from the headers only. Errs on the high side.
pub fn memory(data: &[u8], probe: &Probe, needed: (u32, u32)) -> (u64, (u32, u32)) {
    let ((nw, nh), (sw, sh)) = stored_sizes(probe, needed);
    let pixels = |w: u32, h: u32| u64::from(w) * u64::from(h);
    // A full decode: the frame as decoded plus its conversion to 8-bit RGB(A).
    let full = (pixels(sw, sh) * 8, (sw, sh));
    match probe.format {
        ImageFormat::Jpeg => {
            let Ok(header) = super::jpeg::header(data) else {
                return full;
            };
            if !header.plain {
                return full;
            }
            let scale = super::jpeg::scale_for(sw, sh, (nw, nh));
            let (w, h) = (
                (u64::from(sw) * u64::from(scale)).div_ceil(8) as u32,
                (u64::from(sh) * u64::from(scale)).div_ceil(8) as u32,
            );
            let channels = if header.component_blocks.len() == 1 {
                1
            } else {
                3
            };
            let mut bytes = pixels(w, h) * channels;
            if let Some(coefficients) = super::progressive::coefficient_bytes(data, scale) {
                // The kept coefficients, and the planes they become before colour
                // conversion.
                bytes += coefficients + pixels(w, h) * channels;
            } else if header.progressive {
                // Every coefficient is kept until the last scan: 64 x 2 bytes a block.
                bytes += header
                    .component_blocks
                    .iter()
                    .map(|&(bw, bh)| pixels(bw, bh) * 128)
                    .sum::<u64>();
            }
            (bytes, (w, h))
        }
        ImageFormat::Png => {
            let mut decoder = png::Decoder::new(Cursor::new(data));
            let streams = decoder
                .read_header_info()
                .is_ok_and(|info| !info.interlaced);
            match super::png_shrink::factor(sw, sh, (nw, nh)).filter(|_| streams) {
                Some(k) => {
                    let (w, h) = (sw.div_ceil(k), sh.div_ceil(k));
                    // The output, column sums (u32 per sample) and the decoder's rows.
                    (pixels(w, h) * 4 + u64::from(sw) * 16 * 2, (w, h))
                }
                None => full,
            }
        }
        ImageFormat::WebP => match webp_still_is_lossy(data) {
            Some(true) if nw < sw && nh < sh => {
                // libwebp decodes lossy rows into the scaled output as it goes.
                (pixels(nw, nh) * 4 + u64::from(sw) * 64, (nw, nh))
            }
            // Lossless pictures are decoded whole before scaling.
            Some(_) => (pixels(sw, sh) * 4 + pixels(nw, nh) * 4, (nw, nh)),
            None => full,
        },
        // The container's copy of the coded data, the picture's planes (16 bits a
        // sample above 8-bit depth), their 8-bit copy and the RGB(A) result.
        ImageFormat::Avif => (data.len() as u64 + pixels(sw, sh) * 14, (sw, sh)),
        _ => full,
    }
}

/// Whether a still WebP is lossy (libwebp's header check); None for animations and
/// anything libwebp cannot read.
fn webp_still_is_lossy(data: &[u8]) -> Option<bool> {
    use libwebp_sys as sys;
    // SAFETY: WebPGetFeatures reads at most `data.len()` bytes and fills the struct.
    unsafe {
        let mut features = std::mem::MaybeUninit::<sys::WebPBitstreamFeatures>::zeroed();
        if sys::WebPGetFeatures(data.as_ptr(), data.len(), features.as_mut_ptr())
            != sys::VP8StatusCode::VP8_STATUS_OK
        {
            return None;
        }
        let features = features.assume_init();
        (features.has_animation == 0).then_some(features.format == 1)
    }
}

/// The embedded ICC profile, read from the headers only.
pub fn icc_profile(data: &[u8], limits: &Limits) -> Option<Vec<u8>> {
    if super::avif::is_avif(data) {
        return super::avif::icc_profile(data);
    }
    let mut decoder = reader(data, limits).ok()?.into_decoder().ok()?;
    decoder.icc_profile().ok().flatten()
}
