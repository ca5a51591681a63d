//! Shrink-on-load for PNG: rows are decoded one at a time and averaged into blocks of
//! `k x k` pixels on the way, so a large PNG never exists in memory at full size (a
//! 15-megapixel RGBA PNG is 59 MB decoded; shrunk by 3 it is 6.5 MB). This is what
//! JPEG's DCT scaling does for JPEG, done in the pixel domain.

use std::io::Cursor;

use image::{DynamicImage, RgbImage, RgbaImage};
use png::{BitDepth, ColorType, Transformations};

use super::ThumbnailError;

/// Leave at least this much reduction to the resampling filter: box-averaging all the way
/// down would alias, a final Lanczos pass of 2x or more does not.
const GAP: u32 = 2;

/// The whole factor a `width x height` source can be averaged down by while staying at
/// least `GAP` times `needed`, or None when that is less than 2.
pub(super) fn factor(width: u32, height: u32, needed: (u32, u32)) -> Option<u32> {
    let k = (width / needed.0.max(1).saturating_mul(GAP))
        .min(height / needed.1.max(1).saturating_mul(GAP));
    (k >= 2).then_some(k)
}

/// Decode a non-interlaced PNG averaged down by `k` (see [`factor`]) to 8-bit RGB or RGBA.
/// None for interlaced files (whose rows arrive out of order); those take the full decode.
pub(super) fn decode(data: &[u8], k: u32) -> Result<Option<DynamicImage>, ThumbnailError> {
    let error = |e: png::DecodingError| ThumbnailError::Decode(e.to_string());
    let mut decoder = png::Decoder::new(Cursor::new(data));
    decoder.set_transformations(Transformations::EXPAND | Transformations::STRIP_16);
    decoder.set_ignore_text_chunk(true);
    let mut reader = decoder.read_info().map_err(error)?;
    let info = reader.info();
    if info.interlaced {
        return Ok(None);
    }
    let (width, height) = (info.width, info.height);
    let (color, depth) = reader.output_color_type();
    if depth != BitDepth::Eight {
        return Ok(None);
    }
    let mut shrink = Shrink::new(width, height, k, color)?;
    while let Some(row) = reader.next_row().map_err(error)? {
        shrink.push_row(row.data());
    }
    shrink.finish()
}

/// Column sums over one band of `k` source rows, emitted as one output row.
struct Shrink {
    width: u32,
    height: u32,
    k: u32,
    /// Samples per source pixel: 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).
    samples: usize,
    alpha: bool,
    out_width: u32,
    /// Per source sample, summed down the band; colour is weighted by alpha where
    /// there is alpha, so transparent pixels do not bleed in.
    columns: Vec<u32>,
    rows_in_band: u32,
    rows_seen: u32,
    out: Vec<u8>,
}

impl Shrink {
    fn new(width: u32, height: u32, k: u32, color: ColorType) -> Result<Self, ThumbnailError> {
        let (samples, alpha) = match color {
            ColorType::Grayscale => (1, false),
            ColorType::GrayscaleAlpha => (2, true),
            ColorType::Rgb => (3, false),
            ColorType::Rgba => (4, true),
            ColorType::Indexed => {
                return Err(ThumbnailError::Decode("palette was not expanded".into()));
            }
        };
        let out_width = width.div_ceil(k);
        let out_height = height.div_ceil(k);
        let channels = if alpha { 4 } else { 3 };
        Ok(Self {
            width,
            height,
            k,
            samples,
            alpha,
            out_width,
            columns: vec![0; width as usize * samples],
            rows_in_band: 0,
            rows_seen: 0,
            out: Vec::with_capacity(out_width as usize * out_height as usize * channels),
        })
    }

    fn push_row(&mut self, row: &[u8]) {
        match (self.samples, self.alpha) {
            (2, true) => add_weighted::<2>(&mut self.columns, row),
            (4, true) => add_weighted::<4>(&mut self.columns, row),
            _ => {
                for (sum, &v) in self.columns.iter_mut().zip(row) {
                    *sum += u32::from(v);
                }
            }
        }
        self.rows_in_band += 1;
        self.rows_seen += 1;
        if self.rows_in_band == self.k || self.rows_seen == self.height {
            self.emit_row();
        }
    }

    /// Turn the band's column sums into one output row (blocks at the right and bottom
    /// edges average the pixels they really have).
    fn emit_row(&mut self) {
        let rows = self.rows_in_band;
        let n = self.samples;
        let round = |sum: u32, by: u32| ((sum + by / 2) / by) as u8;
        for (x, block) in self.columns.chunks(self.k as usize * n).enumerate() {
            let cols = (self.width - x as u32 * self.k).min(self.k);
            let count = cols * rows;
            let mut sums = [0u32; 4];
            for px in block.chunks_exact(n) {
                for (s, v) in sums.iter_mut().zip(px) {
                    *s += v;
                }
            }
            let pixel: [u8; 4] = match (n, self.alpha) {
                (2, true) | (4, true) => {
                    let a = sums[n - 1];
                    let colour = |s: u32| if a == 0 { 0 } else { round(s, a) };
                    if n == 2 {
                        let v = colour(sums[0]);
                        [v, v, v, round(a, count)]
                    } else {
                        [
                            colour(sums[0]),
                            colour(sums[1]),
                            colour(sums[2]),
                            round(a, count),
                        ]
                    }
                }
                (1, _) => {
                    let v = round(sums[0], count);
                    [v, v, v, u8::MAX]
                }
                _ => [
                    round(sums[0], count),
                    round(sums[1], count),
                    round(sums[2], count),
                    u8::MAX,
                ],
            };
            let channels = if self.alpha { 4 } else { 3 };
            self.out.extend_from_slice(&pixel[..channels]);
        }
        self.columns.fill(0);
        self.rows_in_band = 0;
    }

    fn finish(self) -> Result<Option<DynamicImage>, ThumbnailError> {
        let (w, h) = (self.out_width, self.height.div_ceil(self.k));
        let truncated = || ThumbnailError::Decode("truncated PNG".into());
        if self.rows_seen != self.height {
            return Err(truncated());
        }
        let image = if self.alpha {
            RgbaImage::from_raw(w, h, self.out).map(DynamicImage::ImageRgba8)
        } else {
            RgbImage::from_raw(w, h, self.out).map(DynamicImage::ImageRgb8)
        };
        image.map(Some).ok_or_else(truncated)
    }
}

/// Add a row of `N`-sample pixels whose last sample is alpha, colour weighted by alpha.
fn add_weighted<const N: usize>(columns: &mut [u32], row: &[u8]) {
    let (sums, _) = columns.as_chunks_mut::<N>();
    let (pixels, _) = row.as_chunks::<N>();
    for (sums, px) in sums.iter_mut().zip(pixels) {
        let a = u32::from(px[N - 1]);
        let mut weighted = px.map(|v| u32::from(v) * a);
        weighted[N - 1] = a;
        for (s, w) in sums.iter_mut().zip(weighted) {
            *s += w;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Rgba};

    fn png(image: DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn factor_leaves_a_gap_for_the_filter() {
        assert_eq!(factor(5120, 2880, (800, 450)), Some(3));
        assert_eq!(factor(1600, 1200, (800, 600)), None);
        assert_eq!(factor(1000, 1000, (100, 400)), None);
        assert_eq!(factor(1000, 1000, (1, 1)), Some(500));
    }

    #[test]
    fn blocks_are_averaged_and_edges_use_what_they_have() {
        // 5x3 grey ramp, k = 2: blocks of 2x2, 1x2, 2x1 and 1x1 at the edges.
        let grey = image::GrayImage::from_fn(5, 3, |x, y| image::Luma([(x * 40 + y * 10) as u8]));
        let out = decode(&png(DynamicImage::ImageLuma8(grey)), 2)
            .unwrap()
            .unwrap()
            .to_rgb8();
        assert_eq!(out.dimensions(), (3, 2));
        // Block (0,0): 0, 40, 10, 50 → 25. Block (2,0): 160, 170 → 165. Block (2,1): 180.
        assert_eq!(out.get_pixel(0, 0).0, [25, 25, 25]);
        assert_eq!(out.get_pixel(2, 0).0, [165, 165, 165]);
        assert_eq!(out.get_pixel(2, 1).0, [180, 180, 180]);
    }

    #[test]
    fn transparent_pixels_do_not_bleed_their_colour() {
        // Half the block is opaque red, half transparent green.
        let img = RgbaImage::from_fn(4, 4, |x, _| {
            if x % 2 == 0 {
                Rgba([255, 0, 0, 255])
            } else {
                Rgba([0, 255, 0, 0])
            }
        });
        let out = decode(&png(DynamicImage::ImageRgba8(img)), 2)
            .unwrap()
            .unwrap()
            .to_rgba8();
        assert_eq!(out.dimensions(), (2, 2));
        assert_eq!(out.get_pixel(0, 0).0, [255, 0, 0, 128]);
    }

    #[test]
    fn truncated_files_are_errors() {
        let img = RgbaImage::from_fn(64, 64, |x, y| Rgba([x as u8, y as u8, 0, 255]));
        let data = png(DynamicImage::ImageRgba8(img));
        assert!(decode(&data[..data.len() / 2], 4).is_err());
    }
}
