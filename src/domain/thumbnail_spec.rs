use super::ParseError;

/// How a thumbnail is fitted to the requested box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// The whole image, aspect ratio kept, fitting inside the box (clients letterbox).
    Scale,
    /// Exactly the box's aspect ratio, centre-cropped.
    Crop,
}

impl Method {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "scale" => Ok(Self::Scale),
            "crop" => Ok(Self::Crop),
            _ => Err(ParseError("method must be \"crop\" or \"scale\"")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scale => "scale",
            Self::Crop => "crop",
        }
    }
}

/// A requested thumbnail: the box a client wants filled, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThumbnailSpec {
    pub width: u32,
    pub height: u32,
    pub method: Method,
}

/// What to produce for a given source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The source already fits the box: serve the original content.
    Original,
    /// Resize (and for crop, first cut `crop` out of the source) to `width` x `height`.
    Resize {
        width: u32,
        height: u32,
        crop: Option<CropRect>,
    },
}

/// A region of the source, in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropRect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl ThumbnailSpec {
    /// Larger boxes are refused: nothing needs a thumbnail that big.
    pub const MAX_SIDE: u32 = 8192;

    pub fn new(width: u32, height: u32, method: Method) -> Result<Self, ParseError> {
        if width == 0 || height == 0 {
            return Err(ParseError("width and height must be positive"));
        }
        if width > Self::MAX_SIDE || height > Self::MAX_SIDE {
            return Err(ParseError("width and height must be at most 8192"));
        }
        Ok(Self {
            width,
            height,
            method,
        })
    }

    /// What to do for a `src_w` x `src_h` source. Never upscales; never returns less
    /// than asked unless the source itself is smaller.
    pub fn plan(&self, src_w: u32, src_h: u32) -> Plan {
        let (bw, bh) = (u64::from(self.width), u64::from(self.height));
        let (sw, sh) = (u64::from(src_w.max(1)), u64::from(src_h.max(1)));
        if sw <= bw && sh <= bh {
            return Plan::Original;
        }
        match self.method {
            Method::Scale => {
                // Fit inside: the limiting side matches the box exactly.
                let (w, h) = if sw * bh >= sh * bw {
                    (bw, div_round(sh * bw, sw))
                } else {
                    (div_round(sw * bh, sh), bh)
                };
                Plan::Resize {
                    width: clamp(w),
                    height: clamp(h),
                    crop: None,
                }
            }
            Method::Crop => {
                // The largest centred region of the box's aspect ratio...
                let (cw, ch) = if sw * bh >= sh * bw {
                    (div_round(sh * bw, bh), sh)
                } else {
                    (sw, div_round(sw * bh, bw))
                };
                let (cw, ch) = (cw.clamp(1, sw), ch.clamp(1, sh));
                let crop = CropRect {
                    x: offset((sw - cw) / 2),
                    y: offset((sh - ch) / 2),
                    width: clamp(cw),
                    height: clamp(ch),
                };
                // ...scaled down to the box, or kept at source resolution if it is smaller.
                let (w, h) = if cw >= bw { (bw, bh) } else { (cw, ch) };
                Plan::Resize {
                    width: clamp(w),
                    height: clamp(h),
                    crop: Some(crop),
                }
            }
        }
    }
}

/// `WIDTHxHEIGHT:method`, e.g. `96x96:crop` (config files and `mxcd bench`).
impl std::str::FromStr for ThumbnailSpec {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = ParseError("thumbnail size must look like 96x96:crop or 320x240:scale");
        let (size, method) = s.split_once(':').ok_or(bad.clone())?;
        let (w, h) = size.split_once('x').ok_or(bad.clone())?;
        let w = w.parse().map_err(|_| bad.clone())?;
        let h = h.parse().map_err(|_| bad)?;
        Self::new(w, h, Method::parse(method)?)
    }
}

impl std::fmt::Display for ThumbnailSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}:{}", self.width, self.height, self.method.as_str())
    }
}

fn div_round(n: u64, d: u64) -> u64 {
    ((n + d / 2) / d).max(1)
}

fn offset(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn clamp(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(w: u32, h: u32, m: Method) -> ThumbnailSpec {
        ThumbnailSpec::new(w, h, m).unwrap()
    }

    fn size(p: Plan) -> (u32, u32) {
        match p {
            Plan::Resize { width, height, .. } => (width, height),
            Plan::Original => panic!("expected a resize"),
        }
    }

    #[test]
    fn parses_and_prints_config_syntax() {
        let s: ThumbnailSpec = "320x240:scale".parse().unwrap();
        assert_eq!(s, spec(320, 240, Method::Scale));
        assert_eq!(s.to_string(), "320x240:scale");
        for bad in ["320x240", "320:scale", "0x5:crop", "ax5:crop", "5x5:fit"] {
            assert!(bad.parse::<ThumbnailSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_boxes() {
        assert!(ThumbnailSpec::new(0, 10, Method::Crop).is_err());
        assert!(ThumbnailSpec::new(10, 0, Method::Scale).is_err());
        assert!(ThumbnailSpec::new(8193, 10, Method::Scale).is_err());
        assert!(Method::parse("fit").is_err());
        assert_eq!(Method::parse("crop").unwrap(), Method::Crop);
    }

    #[test]
    fn scale_fits_inside_keeping_aspect() {
        assert_eq!(
            size(spec(320, 240, Method::Scale).plan(2560, 1600)),
            (320, 200)
        );
        assert_eq!(
            size(spec(320, 240, Method::Scale).plan(1600, 2560)),
            (150, 240)
        );
        assert_eq!(size(spec(32, 32, Method::Scale).plan(1000, 673)), (32, 22));
        assert_eq!(
            size(spec(800, 600, Method::Scale).plan(4096, 4096)),
            (600, 600)
        );
        // Larger than the box on one side only: still shrinks to fit.
        assert_eq!(
            size(spec(640, 480, Method::Scale).plan(1000, 400)),
            (640, 256)
        );
    }

    #[test]
    fn crop_has_the_exact_box_aspect() {
        let p = spec(96, 96, Method::Crop).plan(2560, 1600);
        assert_eq!(
            p,
            Plan::Resize {
                width: 96,
                height: 96,
                crop: Some(CropRect {
                    x: 480,
                    y: 0,
                    width: 1600,
                    height: 1600
                })
            }
        );
        let p = spec(320, 240, Method::Crop).plan(1600, 2560);
        assert_eq!(
            p,
            Plan::Resize {
                width: 320,
                height: 240,
                crop: Some(CropRect {
                    x: 0,
                    y: 680,
                    width: 1600,
                    height: 1200
                })
            }
        );
    }

    #[test]
    fn never_upscales() {
        // Source fits the box: the original is served.
        assert_eq!(spec(800, 600, Method::Scale).plan(640, 480), Plan::Original);
        assert_eq!(spec(96, 96, Method::Crop).plan(69, 76), Plan::Original);
        assert_eq!(spec(96, 96, Method::Crop).plan(96, 96), Plan::Original);
        // Crop where the source is narrower than the box: cut to the aspect at source scale.
        let p = spec(96, 96, Method::Crop).plan(200, 50);
        assert_eq!(
            p,
            Plan::Resize {
                width: 50,
                height: 50,
                crop: Some(CropRect {
                    x: 75,
                    y: 0,
                    width: 50,
                    height: 50
                })
            }
        );
    }

    #[test]
    fn extreme_aspects_stay_at_least_one_pixel() {
        assert_eq!(size(spec(32, 32, Method::Scale).plan(10_000, 1)), (32, 1));
        assert_eq!(size(spec(32, 32, Method::Crop).plan(10_000, 2)), (2, 2));
    }
}
