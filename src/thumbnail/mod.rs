//! Thumbnail generation: pure, synchronous image code (no I/O, no async). Callers run
//! it on blocking threads behind a semaphore.
//!
//! One source is decoded once, shrunk while decoding where the format allows (JPEG by
//! DCT scaling, progressive JPEG keeping only the coefficients that scale uses, PNG by averaging rows as they arrive, lossy WebP by libwebp's scaler) to
//! the largest size any requested thumbnail needs. Every requested size is resized from
//! that with fast_image_resize and encoded: JPEG for opaque images from JPEG and WebP
//! sources, PNG for the rest (alpha, or lossless sources such as PNG and GIF).

mod animated;
mod avif;
mod color;
mod decode;
mod encode;
mod jpeg;
mod png_shrink;
mod progressive;
mod webp_anim;

use std::io::Cursor;

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, GenericImageView, ImageFormat};

use crate::domain::{Plan, ThumbnailSpec};

pub use animated::render_animated;
pub use decode::{Limits, Probe, probe};

/// The pipeline's stages one by one, for benchmarks (`benches/thumbnail.rs`).
pub mod stages {
    use fast_image_resize::Resizer;
    use image::DynamicImage;

    use super::{Limits, Probe, Thumbnail, ThumbnailError};
    use crate::domain::Plan;

    /// Decode as `render_all` does for `plans` (JPEG shrink-on-load included).
    pub fn decode(
        data: &[u8],
        probe: &Probe,
        plans: &[Plan],
        limits: &Limits,
    ) -> Result<DynamicImage, ThumbnailError> {
        let needed = plans
            .iter()
            .filter_map(|p| super::needed_source_size(*p, probe))
            .fold((1, 1), |a, b| (a.0.max(b.0), a.1.max(b.1)));
        super::decode::decode(data, probe, needed, limits)
    }

    /// Resize a decoded image for one plan (from the decoded image, no cascade).
    pub fn resize(
        image: &DynamicImage,
        probe: &Probe,
        plan: Plan,
    ) -> Result<DynamicImage, ThumbnailError> {
        match plan {
            Plan::Original => Ok(image.clone()),
            Plan::Resize {
                width,
                height,
                crop,
            } => super::resize(
                &mut Resizer::new(),
                image,
                probe,
                (width, height),
                crop,
                true,
            ),
        }
    }

    /// Encode as `render_all` does for a source of `format`, with or without `alpha`.
    pub fn encode(
        image: &DynamicImage,
        format: image::ImageFormat,
        alpha: bool,
    ) -> Result<Thumbnail, ThumbnailError> {
        super::encode::encode(image, super::encode::Output::for_source(format, alpha))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThumbnailError {
    /// Not an image we can thumbnail (unknown or unsupported format, SVG, …).
    #[error("unsupported content")]
    Unsupported,
    /// More pixels than `max_pixels`.
    #[error("image of {width}x{height} is larger than allowed")]
    TooLarge { width: u32, height: u32 },
    /// Corrupt or truncated data.
    #[error("cannot decode image: {0}")]
    Decode(String),
    #[error("cannot encode thumbnail: {0}")]
    Encode(String),
    /// Took longer than the caller's time limit (set by the caller, not by this module).
    #[error("thumbnailing took too long")]
    TimedOut,
}

/// An encoded thumbnail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

/// What one requested spec turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    /// Serve the original content (it fits the box, or a thumbnail would be bigger).
    Original,
    Thumbnail(Thumbnail),
}

/// Memory not counted per image: resizer state, encoder tables, small buffers.
const FIXED_MEMORY: u64 = 4 << 20;

/// Roughly the most memory `render_all(data, specs, limits)` holds at once, in bytes
/// (the source included), judged from the headers only; errs on the high side. Fails
/// as `render_all` would for files refused from their header.
pub fn memory_estimate(
    data: &[u8],
    specs: &[ThumbnailSpec],
    limits: &Limits,
) -> Result<u64, ThumbnailError> {
    let probe = probe(data, limits)?;
    let (plans, needed) = plan_all(&probe, specs);
    let source = data.len() as u64 + FIXED_MEMORY;
    if needed == (0, 0) {
        return Ok(source);
    }
    let (decoding, (w, h)) = decode::memory(data, &probe, needed);
    let decoded = u64::from(w) * u64::from(h) * 4;
    // Resizing keeps the decoded image and a horizontal pass; every uncropped result
    // stays as a source for smaller sizes.
    let outputs: u64 = plans.iter().map(|p| output_pixels(*p) * 4 * 2).sum();
    Ok(source + decoding.max(decoded) + decoded / 2 + outputs)
}

/// Like [`memory_estimate`], for `render_animated`: frames are decoded one at a time
/// onto a canvas of the image's size.
pub fn animated_memory_estimate(data: &[u8], limits: &Limits) -> Result<u64, ThumbnailError> {
    let probe = probe(data, limits)?;
    let canvas = u64::from(probe.width) * u64::from(probe.height) * 4;
    Ok(data.len() as u64 + FIXED_MEMORY + canvas * 4)
}

/// Each spec's plan for this source (sources that are not web formats are always
/// re-encoded), and the decoded size (oriented) that makes all of them.
fn plan_all(probe: &Probe, specs: &[ThumbnailSpec]) -> (Vec<Plan>, (u32, u32)) {
    // Only formats every client displays may be served as they are.
    let web_safe = web_mime(probe.format).is_some();
    let plans: Vec<Plan> = specs
        .iter()
        .map(|s| match s.plan(probe.width, probe.height) {
            Plan::Original if !web_safe => Plan::Resize {
                width: probe.width,
                height: probe.height,
                crop: None,
            },
            plan => plan,
        })
        .collect();
    let needed = plans
        .iter()
        .filter_map(|p| needed_source_size(*p, probe))
        .fold((0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
    (plans, needed)
}

/// Render every spec of `specs` from one decode of `data`. Also returns what the
/// header said (format and oriented size).
pub fn render_all(
    data: &[u8],
    specs: &[ThumbnailSpec],
    limits: &Limits,
) -> Result<(Probe, Vec<Rendered>), ThumbnailError> {
    let probe = probe(data, limits)?;
    let web_safe = web_mime(probe.format).is_some();
    let (plans, needed) = plan_all(&probe, specs);
    if needed == (0, 0) {
        return Ok((probe, vec![Rendered::Original; specs.len()]));
    }
    let image = decode::decode(data, &probe, needed, limits)?;
    let has_alpha = encode::has_alpha(&image);
    let output = encode::Output::for_source(probe.format, has_alpha);
    let to_srgb = decode::icc_profile(data, limits)
        .and_then(|icc| color::ToSrgb::new(&icc, matches!(image, DynamicImage::ImageRgba8(_))));
    let mut resizer = Resizer::new();
    // Largest first: every whole-image result becomes a cheaper source for the
    // smaller sizes after it (resizing cost grows with the source's pixels).
    let mut order: Vec<usize> = (0..plans.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(output_pixels(plans[i])));
    let mut sources: Vec<DynamicImage> = vec![image];
    let mut rendered = vec![Rendered::Original; plans.len()];
    for i in order {
        let Plan::Resize {
            width,
            height,
            crop,
        } = plans[i]
        else {
            continue;
        };
        let factor = needed_factor(plans[i], &probe);
        // The smallest source with at least the resolution this plan needs.
        let source = sources
            .iter()
            .filter(|s| f64::from(s.width()) / f64::from(probe.width) >= factor)
            .min_by_key(|s| u64::from(s.width()) * u64::from(s.height()))
            .unwrap_or(&sources[0]);
        let resized = resize(
            &mut resizer,
            source,
            &probe,
            (width, height),
            crop,
            has_alpha,
        )?;
        let thumb = match &to_srgb {
            // Converted copies are encoded; unconverted results stay sources for smaller sizes.
            Some(convert) => {
                let mut srgb = resized.clone();
                convert.apply(&mut srgb);
                encode::encode(&srgb, output)?
            }
            None => encode::encode(&resized, output)?,
        };
        if crop.is_none() {
            sources.push(resized);
        }
        // A thumbnail larger than its source is pointless: serve the source.
        rendered[i] = if web_safe && thumb.bytes.len() >= data.len() {
            Rendered::Original
        } else {
            Rendered::Thumbnail(thumb)
        };
    }
    Ok((probe, rendered))
}

/// The decoded size (in oriented source pixels) needed to make `plan` without upscaling.
fn needed_source_size(plan: Plan, probe: &Probe) -> Option<(u32, u32)> {
    let Plan::Resize { .. } = plan else {
        return None;
    };
    let f = needed_factor(plan, probe);
    Some((
        (f64::from(probe.width) * f).ceil() as u32,
        (f64::from(probe.height) * f).ceil() as u32,
    ))
}

/// The scale (relative to the full source) a source must have at least to make `plan`.
fn needed_factor(plan: Plan, probe: &Probe) -> f64 {
    let Plan::Resize {
        width,
        height,
        crop,
    } = plan
    else {
        return 1.0;
    };
    let (cw, ch) = crop.map_or((probe.width, probe.height), |c| (c.width, c.height));
    let fx = f64::from(width) / f64::from(cw);
    let fy = f64::from(height) / f64::from(ch);
    fx.max(fy).min(1.0)
}

fn output_pixels(plan: Plan) -> u64 {
    match plan {
        Plan::Resize { width, height, .. } => u64::from(width) * u64::from(height),
        Plan::Original => 0,
    }
}

/// `alpha`: whether any pixel is transparent. Only then is alpha premultiplied while
/// resizing, which costs a full copy of the source.
fn resize(
    resizer: &mut Resizer,
    image: &DynamicImage,
    probe: &Probe,
    (width, height): (u32, u32),
    crop: Option<crate::domain::CropRect>,
    alpha: bool,
) -> Result<DynamicImage, ThumbnailError> {
    if crop.is_none() && (width, height) == image.dimensions() {
        return Ok(image.clone());
    }
    // The plan is in full-size source pixels; the decoded image may be smaller.
    let sx = f64::from(image.width()) / f64::from(probe.width);
    let sy = f64::from(image.height()) / f64::from(probe.height);
    let mut options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .use_alpha(alpha);
    if let Some(c) = crop {
        options = options.crop(
            f64::from(c.x) * sx,
            f64::from(c.y) * sy,
            f64::from(c.width) * sx,
            f64::from(c.height) * sy,
        );
    }
    let mut out = DynamicImage::new(width, height, image.color());
    resizer
        .resize(image, &mut out, &options)
        .map_err(|e| ThumbnailError::Encode(format!("resize: {e}")))?;
    Ok(out)
}

/// The MIME type of formats every client can display as a thumbnail (the spec allows
/// JPEG, PNG, GIF and WebP), or None.
pub fn web_mime(format: ImageFormat) -> Option<&'static str> {
    match format {
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Gif | ImageFormat::WebP => {
            Some(format.to_mime_type())
        }
        _ => None,
    }
}

/// The image format of `data`, from its magic bytes.
pub fn sniff(data: &[u8]) -> Option<ImageFormat> {
    if avif::is_avif(data) {
        return Some(ImageFormat::Avif);
    }
    image::ImageReader::new(Cursor::new(data))
        .with_guessed_format()
        .ok()?
        .format()
}

#[cfg(test)]
mod tests;
