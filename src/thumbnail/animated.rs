//! Animated thumbnails: every frame of an animated GIF, WebP or APNG resized and encoded
//! as an animated WebP, keeping frame timing and the loop count.

use std::io::Cursor;

use fast_image_resize::Resizer;
use image::codecs::gif::GifDecoder;
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::metadata::LoopCount;
use image::{AnimationDecoder, DynamicImage, Frames, ImageFormat};

use super::webp_anim::AnimEncoder;
use super::{Limits, Probe, Rendered, Thumbnail, ThumbnailError, probe, resize};
use crate::domain::{Plan, ThumbnailSpec};

/// Quality of the lossy animated WebP output.
const WEBP_QUALITY: f32 = 80.0;
/// Browsers show GIF delays of 10 ms or less as 100 ms; keep what people saw.
const MIN_DELAY_MS: u32 = 20;
const DEFAULT_DELAY_MS: u32 = 100;

/// Render `spec` as an animation. `Ok(None)` when the source is not animated (one frame,
/// or a format without animation): the caller makes a still thumbnail instead.
pub fn render_animated(
    data: &[u8],
    spec: ThumbnailSpec,
    limits: &Limits,
) -> Result<Option<Rendered>, ThumbnailError> {
    let probe = probe(data, limits)?;
    let Some((frames, loop_count)) = frames_of(data, &probe)? else {
        return Ok(None);
    };
    let plan = spec.plan(probe.width, probe.height);
    let Plan::Resize {
        width,
        height,
        crop,
    } = plan
    else {
        // Already fits: the original animation is the answer.
        return Ok(Some(Rendered::Original));
    };

    let loops = match loop_count {
        LoopCount::Infinite => 0,
        LoopCount::Finite(n) => i32::try_from(n.get()).unwrap_or(0),
    };
    let mut encoder = AnimEncoder::new(width, height, WEBP_QUALITY, loops)?;
    let mut resizer = Resizer::new();
    let mut timestamp_ms: u32 = 0;
    let mut count: u64 = 0;
    let frame_pixels = u64::from(probe.width) * u64::from(probe.height);
    for frame in frames {
        let frame = frame.map_err(|e| ThumbnailError::Decode(e.to_string()))?;
        count += 1;
        if count * frame_pixels > limits.max_animation_pixels {
            return Err(ThumbnailError::TooLarge {
                width: probe.width,
                height: probe.height,
            });
        }
        let (num, den) = frame.delay().numer_denom_ms();
        let delay = num.checked_div(den).unwrap_or(DEFAULT_DELAY_MS);
        let delay = if delay <= 10 {
            DEFAULT_DELAY_MS
        } else {
            delay.max(MIN_DELAY_MS)
        };
        let image = DynamicImage::ImageRgba8(frame.into_buffer());
        let resized =
            resize(&mut resizer, &image, &probe, (width, height), crop, true)?.into_rgba8();
        encoder.add(&resized, ms(timestamp_ms))?;
        timestamp_ms = timestamp_ms.saturating_add(delay);
    }
    if count < 2 {
        return Ok(None);
    }
    let bytes = encoder.finish(ms(timestamp_ms))?;
    Ok(Some(Rendered::Thumbnail(Thumbnail {
        bytes,
        content_type: "image/webp",
        width,
        height,
    })))
}

fn ms(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// The frames of an animated source, or None if it is a still image.
fn frames_of<'a>(
    data: &'a [u8],
    probe: &Probe,
) -> Result<Option<(Frames<'a>, LoopCount)>, ThumbnailError> {
    let err = |e: image::ImageError| ThumbnailError::Decode(e.to_string());
    let cursor = Cursor::new(data);
    Ok(match probe.format {
        ImageFormat::Gif => {
            let d = GifDecoder::new(cursor).map_err(err)?;
            let loops = d.loop_count();
            Some((d.into_frames(), loops))
        }
        ImageFormat::WebP => {
            let d = WebPDecoder::new(cursor).map_err(err)?;
            if !d.has_animation() {
                return Ok(None);
            }
            let loops = d.loop_count();
            Some((d.into_frames(), loops))
        }
        ImageFormat::Png => {
            let d = PngDecoder::new(cursor).map_err(err)?;
            if !d.is_apng().map_err(err)? {
                return Ok(None);
            }
            let d = d.apng().map_err(err)?;
            let loops = d.loop_count();
            Some((d.into_frames(), loops))
        }
        _ => None,
    })
}
