//! Output encoding: JPEG (quality 80) for opaque images, PNG where there is alpha.

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, ImageEncoder};

use super::{Thumbnail, ThumbnailError};

const JPEG_QUALITY: u8 = 80;

/// Whether any pixel is not fully opaque.
pub fn has_alpha(image: &DynamicImage) -> bool {
    match image {
        DynamicImage::ImageRgba8(buf) => buf.pixels().any(|p| p.0[3] != u8::MAX),
        _ => false,
    }
}

pub fn encode(image: &DynamicImage, alpha: bool) -> Result<Thumbnail, ThumbnailError> {
    let (width, height) = (image.width(), image.height());
    let mut bytes = Vec::new();
    if alpha {
        let rgba = image.to_rgba8();
        PngEncoder::new_with_quality(&mut bytes, CompressionType::Fast, FilterType::Adaptive)
            .write_image(
                rgba.as_raw(),
                width,
                height,
                image::ExtendedColorType::Rgba8,
            )
            .map_err(|e| ThumbnailError::Encode(e.to_string()))?;
        return Ok(Thumbnail {
            bytes,
            content_type: "image/png",
            width,
            height,
        });
    }
    let (raw, color) = match image {
        DynamicImage::ImageRgb8(buf) => (buf.as_raw().as_slice(), jpeg_encoder::ColorType::Rgb),
        DynamicImage::ImageRgba8(buf) => (buf.as_raw().as_slice(), jpeg_encoder::ColorType::Rgba),
        _ => return Err(ThumbnailError::Encode("unexpected pixel format".into())),
    };
    let to_u16 = |v: u32| {
        u16::try_from(v).map_err(|_| ThumbnailError::Encode("thumbnail too large for JPEG".into()))
    };
    jpeg_encoder::Encoder::new(&mut bytes, JPEG_QUALITY)
        .encode(raw, to_u16(width)?, to_u16(height)?, color)
        .map_err(|e| ThumbnailError::Encode(e.to_string()))?;
    Ok(Thumbnail {
        bytes,
        content_type: "image/jpeg",
        width,
        height,
    })
}
