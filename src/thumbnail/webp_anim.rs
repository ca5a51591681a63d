//! Animated WebP encoding through libwebp's WebPAnimEncoder. The `webp` crate's wrapper
//! keeps every frame until the end and ends the stream with timestamp 0, which libwebp
//! rejects (it then guesses the last frame's duration); this one adds frames as they
//! come and closes the stream at the real end time.

use std::ptr;

use image::RgbaImage;
use libwebp_sys as sys;

use super::ThumbnailError;

pub struct AnimEncoder {
    enc: *mut sys::WebPAnimEncoder,
    config: sys::WebPConfig,
    width: u32,
    height: u32,
}

// The encoder is owned and used by one thread at a time.
unsafe impl Send for AnimEncoder {}

fn err(what: &str) -> ThumbnailError {
    ThumbnailError::Encode(format!("animated webp: {what}"))
}

impl AnimEncoder {
    /// A lossy encoder at `quality` (0-100) for frames of `width` x `height`.
    /// `loop_count` 0 loops forever.
    pub fn new(
        width: u32,
        height: u32,
        quality: f32,
        loop_count: i32,
    ) -> Result<Self, ThumbnailError> {
        let w = i32::try_from(width).map_err(|_| err("width"))?;
        let h = i32::try_from(height).map_err(|_| err("height"))?;
        let mut config = sys::WebPConfig::new().map_err(|()| err("config"))?;
        config.quality = quality;
        config.lossless = 0;
        // SAFETY: the options struct is initialised by libwebp before use; the encoder
        // pointer is checked for NULL and freed in Drop.
        unsafe {
            let mut options = std::mem::MaybeUninit::<sys::WebPAnimEncoderOptions>::uninit();
            if sys::WebPAnimEncoderOptionsInitInternal(
                options.as_mut_ptr(),
                sys::WEBP_MUX_ABI_VERSION as i32,
            ) == 0
            {
                return Err(err("options"));
            }
            let mut options = options.assume_init();
            options.anim_params.loop_count = loop_count;
            let enc =
                sys::WebPAnimEncoderNewInternal(w, h, &options, sys::WEBP_MUX_ABI_VERSION as i32);
            if enc.is_null() {
                return Err(err("encoder"));
            }
            Ok(Self {
                enc,
                config,
                width,
                height,
            })
        }
    }

    /// Add a frame shown from `timestamp_ms` on.
    pub fn add(&mut self, frame: &RgbaImage, timestamp_ms: i32) -> Result<(), ThumbnailError> {
        if frame.dimensions() != (self.width, self.height) {
            return Err(err("frame size"));
        }
        let stride = i32::try_from(self.width * 4).map_err(|_| err("stride"))?;
        // SAFETY: the picture is initialised by libwebp, imports from a buffer of exactly
        // width x height RGBA pixels (checked above), and is freed before returning.
        unsafe {
            let mut pic = sys::WebPPicture::new().map_err(|()| err("picture"))?;
            pic.use_argb = 1;
            pic.width = self.width as i32;
            pic.height = self.height as i32;
            if sys::WebPPictureImportRGBA(&mut pic, frame.as_raw().as_ptr(), stride) == 0 {
                sys::WebPPictureFree(&mut pic);
                return Err(err("import"));
            }
            let ok = sys::WebPAnimEncoderAdd(self.enc, &mut pic, timestamp_ms, &self.config);
            sys::WebPPictureFree(&mut pic);
            if ok == 0 {
                return Err(err("add frame"));
            }
        }
        Ok(())
    }

    /// Close the animation at `end_ms` (the end of the last frame) and assemble it.
    pub fn finish(self, end_ms: i32) -> Result<Vec<u8>, ThumbnailError> {
        // SAFETY: `self.enc` is a live encoder; the assembled data is copied out and then
        // released with WebPDataClear.
        unsafe {
            if sys::WebPAnimEncoderAdd(self.enc, ptr::null_mut(), end_ms, ptr::null()) == 0 {
                return Err(err("end of stream"));
            }
            let mut data = sys::WebPData {
                bytes: ptr::null(),
                size: 0,
            };
            if sys::WebPAnimEncoderAssemble(self.enc, &mut data) == 0 {
                return Err(err("assemble"));
            }
            let bytes = std::slice::from_raw_parts(data.bytes, data.size).to_vec();
            sys::WebPDataClear(&mut data);
            Ok(bytes)
        }
    }
}

impl Drop for AnimEncoder {
    fn drop(&mut self) {
        // SAFETY: created by WebPAnimEncoderNewInternal, deleted exactly once.
        unsafe { sys::WebPAnimEncoderDelete(self.enc) }
    }
}
