//! Output encoding of still thumbnails: JPEG (quality 80) for opaque images from lossy
//! sources, PNG for everything else.

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, ImageEncoder, ImageFormat};

use super::{Thumbnail, ThumbnailError};

const JPEG_QUALITY: u8 = 80;

/// Whether any pixel is not fully opaque.
pub fn has_alpha(image: &DynamicImage) -> bool {
    match image {
        DynamicImage::ImageRgba8(buf) => buf.pixels().any(|p| p.0[3] != u8::MAX),
        _ => false,
    }
}

/// How a still thumbnail is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Jpeg,
    /// With an alpha channel only when `alpha`.
    Png {
        alpha: bool,
    },
}

impl Output {
    /// JPEG for opaque images from lossy sources (JPEG, WebP, AVIF); PNG where there is alpha
    /// or the source is lossless (PNG, GIF, BMP, TIFF, ...). Lossless sources are
    /// mostly screenshots, drawings and text, whose sharp edges JPEG smears; and
    /// clients (and Complement) expect the thumbnail of a PNG to be a PNG, as Synapse
    /// and matrix-media-repo make it.
    pub fn for_source(format: ImageFormat, alpha: bool) -> Self {
        match format {
            _ if alpha => Self::Png { alpha: true },
            ImageFormat::Jpeg | ImageFormat::WebP | ImageFormat::Avif => Self::Jpeg,
            _ => Self::Png { alpha: false },
        }
    }
}

pub fn encode(image: &DynamicImage, output: Output) -> Result<Thumbnail, ThumbnailError> {
    let (width, height) = (image.width(), image.height());
    let mut bytes = Vec::new();
    if let Output::Png { alpha } = output {
        let encoder =
            PngEncoder::new_with_quality(&mut bytes, CompressionType::Fast, FilterType::Adaptive);
        let written = match (alpha, image) {
            (true, _) => encoder.write_image(
                image.to_rgba8().as_raw(),
                width,
                height,
                image::ExtendedColorType::Rgba8,
            ),
            (false, DynamicImage::ImageRgb8(rgb)) => {
                encoder.write_image(rgb.as_raw(), width, height, image::ExtendedColorType::Rgb8)
            }
            (false, _) => encoder.write_image(
                image.to_rgb8().as_raw(),
                width,
                height,
                image::ExtendedColorType::Rgb8,
            ),
        };
        written.map_err(|e| ThumbnailError::Encode(e.to_string()))?;
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
