//! Embedded ICC profiles: thumbnails are converted to sRGB (what browsers assume for
//! untagged images), so wide-gamut photos do not look washed out.

use std::sync::Arc;

use image::DynamicImage;
use moxcms::{ColorProfile, DataColorSpace, Layout, Transform8BitExecutor, TransformOptions};

/// A conversion from an image's embedded RGB profile to sRGB.
pub struct ToSrgb {
    transform: Arc<Transform8BitExecutor>,
}

impl ToSrgb {
    /// None when there is nothing to do or the profile cannot be used (not RGB,
    /// unparseable): the pixels are then kept as they are.
    pub fn new(icc: &[u8], alpha: bool) -> Option<Self> {
        let source = ColorProfile::new_from_slice(icc).ok()?;
        if source.color_space != DataColorSpace::Rgb {
            return None;
        }
        let layout = if alpha { Layout::Rgba } else { Layout::Rgb };
        let transform = source
            .create_transform_8bit(
                layout,
                &ColorProfile::new_srgb(),
                layout,
                TransformOptions::default(),
            )
            .ok()?;
        Some(Self { transform })
    }

    /// Convert an 8-bit RGB or RGBA image (the layout given to [`ToSrgb::new`]).
    pub fn apply(&self, image: &mut DynamicImage) {
        let pixels: &mut [u8] = match image {
            DynamicImage::ImageRgb8(buf) => buf,
            DynamicImage::ImageRgba8(buf) => buf,
            _ => return,
        };
        let mut out = vec![0u8; pixels.len()];
        if self.transform.transform(pixels, &mut out).is_ok() {
            pixels.copy_from_slice(&out);
        }
    }
}
