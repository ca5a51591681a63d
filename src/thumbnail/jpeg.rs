//! JPEG through libjpeg-turbo (mozjpeg-sys builds it from source with the C compiler,
//! no system library): DCT-domain scaling by any n/8 while decoding, so a 20-megapixel
//! photo is never decoded at full size to make an 800x600, and libjpeg-turbo's
//! progressive decoding, the fastest there is.
//!
//! libjpeg reports errors through a callback that must not return; ours unwinds (the C
//! code is built with unwind tables), and every entry point here catches that and turns
//! it into a [`ThumbnailError`]. A file that ends early is an error too, not a picture
//! with a grey bottom.

use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use image::{DynamicImage, GrayImage, RgbImage};
use mozjpeg_sys as sys;

use super::ThumbnailError;

/// What the headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Header {
    pub width: u32,
    pub height: u32,
    pub progressive: bool,
    /// Per component: its size in 8x8 blocks (after subsampling).
    pub component_blocks: Vec<(u32, u32)>,
    /// Grey or colour that decodes straight to 8-bit grey or RGB (not CMYK/YCCK).
    pub plain: bool,
}

/// The panic payload of a libjpeg error.
struct LibjpegError(String);

/// A decompressor over `data`, destroyed on drop (also after an error).
struct Decompress<'a> {
    cinfo: Box<sys::jpeg_decompress_struct>,
    _err: Box<sys::jpeg_error_mgr>,
    _data: &'a [u8],
}

impl<'a> Decompress<'a> {
    /// Create and read the headers. Unwinds with a [`LibjpegError`] on bad data: call
    /// only inside [`guarded`].
    fn new(data: &'a [u8]) -> Self {
        // SAFETY: both structs are zeroed then initialised by libjpeg; they are boxed so
        // their addresses stay put while libjpeg holds pointers to them, and the error
        // manager outlives the decompressor (fields drop after `drop` runs).
        unsafe {
            let mut err: Box<sys::jpeg_error_mgr> = Box::new(std::mem::zeroed());
            sys::jpeg_std_error(&mut err);
            err.error_exit = Some(error_exit);
            err.emit_message = Some(emit_message);
            let mut cinfo: Box<sys::jpeg_decompress_struct> = Box::new(std::mem::zeroed());
            cinfo.common.err = &mut *err;
            sys::jpeg_create_decompress(&mut *cinfo);
            let mut this = Self {
                cinfo,
                _err: err,
                _data: data,
            };
            sys::jpeg_mem_src(&mut this.cinfo, data.as_ptr(), data.len() as _);
            sys::jpeg_read_header(&mut this.cinfo, 1);
            this
        }
    }

    fn header(&self) -> Header {
        let c = &*self.cinfo;
        let components = if c.comp_info.is_null() {
            &[][..]
        } else {
            // SAFETY: after jpeg_read_header, comp_info points at num_components entries.
            unsafe { std::slice::from_raw_parts(c.comp_info, c.num_components.max(0) as usize) }
        };
        let (hmax, vmax) = components.iter().fold((1, 1), |(h, v), ci| {
            (h.max(ci.h_samp_factor), v.max(ci.v_samp_factor))
        });
        let blocks = |size: u32, samp: c_int, max: c_int| {
            (u64::from(size) * samp.max(1) as u64).div_ceil(max.max(1) as u64 * 8) as u32
        };
        Header {
            width: c.image_width,
            height: c.image_height,
            // SAFETY: valid after jpeg_read_header.
            progressive: unsafe { sys::jpeg_has_multiple_scans(c) } != 0,
            component_blocks: components
                .iter()
                .map(|ci| {
                    (
                        blocks(c.image_width, ci.h_samp_factor, hmax),
                        blocks(c.image_height, ci.v_samp_factor, vmax),
                    )
                })
                .collect(),
            plain: matches!(
                c.jpeg_color_space,
                sys::J_COLOR_SPACE::JCS_GRAYSCALE
                    | sys::J_COLOR_SPACE::JCS_YCbCr
                    | sys::J_COLOR_SPACE::JCS_RGB
            ),
        }
    }
}

impl Drop for Decompress<'_> {
    fn drop(&mut self) {
        // SAFETY: created by jpeg_create_decompress; destroying is valid in any state.
        unsafe { sys::jpeg_destroy_decompress(&mut self.cinfo) }
    }
}

extern "C-unwind" fn error_exit(cinfo: &mut sys::jpeg_common_struct) {
    resume_unwind(Box::new(LibjpegError(message(cinfo))));
}

/// Warnings are ignored (real-world files often have a few stray bytes), except that
/// the data ended early: that file is truncated.
extern "C-unwind" fn emit_message(cinfo: &mut sys::jpeg_common_struct, level: c_int) {
    // SAFETY: `err` is the manager installed in `Decompress::new`.
    let code = unsafe { (*cinfo.err).msg_code };
    if level < 0 && code == sys::JWRN_JPEG_EOF as c_int {
        resume_unwind(Box::new(LibjpegError("truncated JPEG".into())));
    }
}

/// The message (unformatted: "%d" placeholders stay) for libjpeg's current error code.
fn message(cinfo: &sys::jpeg_common_struct) -> String {
    // SAFETY: the standard error manager's table has `last_jpeg_message + 1` entries,
    // each NULL or a NUL-terminated static string.
    unsafe {
        let err = &*cinfo.err;
        let code = err.msg_code;
        if err.jpeg_message_table.is_null() || code < 0 || code > err.last_jpeg_message {
            return format!("error {code}");
        }
        let text = *err.jpeg_message_table.add(code as usize);
        if text.is_null() {
            return format!("error {code}");
        }
        std::ffi::CStr::from_ptr(text)
            .to_string_lossy()
            .into_owned()
    }
}

/// Run libjpeg code, turning its errors (unwinds) into [`ThumbnailError::Decode`].
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, ThumbnailError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| match payload.downcast::<LibjpegError>() {
        Ok(e) => ThumbnailError::Decode(format!("JPEG: {}", e.0)),
        Err(other) => resume_unwind(other),
    })
}

/// Read the headers only.
pub(super) fn header(data: &[u8]) -> Result<Header, ThumbnailError> {
    guarded(|| Decompress::new(data).header())
}

/// Decode at `scale`/8 of the full size (1..=8) to 8-bit grey or RGB. None for CMYK and
/// YCCK files, which the general decoder handles.
pub(super) fn decode_scaled(
    data: &[u8],
    scale: u32,
) -> Result<Option<DynamicImage>, ThumbnailError> {
    guarded(|| {
        let mut d = Decompress::new(data);
        let grey = match d.cinfo.jpeg_color_space {
            sys::J_COLOR_SPACE::JCS_GRAYSCALE => true,
            sys::J_COLOR_SPACE::JCS_YCbCr | sys::J_COLOR_SPACE::JCS_RGB => false,
            _ => return None,
        };
        let c = &mut *d.cinfo;
        c.scale_num = scale.clamp(1, 8);
        c.scale_denom = 8;
        c.out_color_space = if grey {
            sys::J_COLOR_SPACE::JCS_GRAYSCALE
        } else {
            sys::J_COLOR_SPACE::JCS_RGB
        };
        c.dct_method = sys::J_DCT_METHOD::JDCT_ISLOW;
        // SAFETY: headers were read; scanlines are written into rows of `pixels`, each
        // `stride` bytes long, and never past `output_height` rows.
        unsafe {
            sys::jpeg_start_decompress(c);
            let (w, h) = (c.output_width, c.output_height);
            let stride = w as usize * c.output_components as usize;
            let mut pixels = vec![0u8; stride * h as usize];
            while c.output_scanline < h {
                let row = pixels.as_mut_ptr().add(stride * c.output_scanline as usize);
                let mut rows = [row];
                sys::jpeg_read_scanlines(c, rows.as_mut_ptr(), 1);
            }
            sys::jpeg_finish_decompress(c);
            if grey {
                GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
            } else {
                RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
            }
        }
    })
}

/// The smallest n/8 scale (1..=8) at which a `width x height` JPEG decodes to at least
/// `needed`.
pub(super) fn scale_for(width: u32, height: u32, needed: (u32, u32)) -> u32 {
    (1..=8)
        .find(|n| {
            (u64::from(width) * n).div_ceil(8) >= u64::from(needed.0)
                && (u64::from(height) * n).div_ceil(8) >= u64::from(needed.1)
        })
        .map_or(8, |n| n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32, progressive: bool) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 90]));
        let mut out = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut out, 90);
        enc.set_progressive(progressive);
        enc.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
        enc.encode(
            img.as_raw(),
            w as u16,
            h as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .unwrap();
        out
    }

    #[test]
    fn headers_tell_progressive_and_blocks() {
        let h = header(&jpeg(100, 50, true)).unwrap();
        assert!(h.progressive && h.plain);
        assert_eq!((h.width, h.height), (100, 50));
        // Chroma subsampled 2x2 (4:2:0).
        assert_eq!(h.component_blocks, vec![(13, 7), (7, 4), (7, 4)]);
        assert!(!header(&jpeg(100, 50, false)).unwrap().progressive);
    }

    #[test]
    fn decodes_at_the_asked_scale() {
        for progressive in [false, true] {
            let img = decode_scaled(&jpeg(800, 600, progressive), 3)
                .unwrap()
                .unwrap();
            assert_eq!((img.width(), img.height()), (300, 225));
        }
        assert_eq!(scale_for(800, 600, (300, 225)), 3);
        assert_eq!(scale_for(800, 600, (301, 225)), 4);
        assert_eq!(scale_for(800, 600, (800, 600)), 8);
    }

    #[test]
    fn bad_and_truncated_files_are_errors_not_panics() {
        let data = jpeg(256, 256, false);
        assert!(matches!(
            decode_scaled(&data[..data.len() / 2], 8),
            Err(ThumbnailError::Decode(_))
        ));
        assert!(matches!(
            header(b"\xff\xd8garbage"),
            Err(ThumbnailError::Decode(_))
        ));
        assert!(matches!(
            decode_scaled(&[], 8),
            Err(ThumbnailError::Decode(_))
        ));
    }
}
