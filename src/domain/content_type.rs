use std::fmt;

use super::ParseError;

/// A Content-Type exactly as the uploader declared it. It is stored and returned
/// verbatim (the spec wants even a bogus `img/png` preserved); it is only checked
/// to be a legal header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType(String);

/// Types that may be served with `Content-Disposition: inline` (spec v1.12, MSC2702).
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

impl ContentType {
    pub const MAX_LEN: usize = 255;

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(ParseError("content type must be 1 to 255 bytes long"));
        }
        // Visible ASCII and spaces only: anything else cannot be sent back as a header.
        if !s
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b))
        {
            return Err(ParseError("content type contains invalid characters"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn octet_stream() -> Self {
        Self("application/octet-stream".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The essence (type/subtype) in lower case, without parameters.
    pub fn essence(&self) -> String {
        self.0
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }

    /// Whether media of this type may be shown inline by a browser.
    pub fn is_inline(&self) -> bool {
        INLINE_TYPES.contains(&self.essence().as_str())
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_list_is_case_insensitive_and_ignores_parameters() {
        let ct = |s| ContentType::parse(s).unwrap();
        assert!(ct("Text/Plain; charset=utf-8").is_inline());
        assert!(ct("image/png").is_inline());
        assert!(ct("IMAGE/JPEG").is_inline());
        assert!(!ct("text/html").is_inline());
        assert!(!ct("image/svg+xml").is_inline());
        assert!(!ct("text/javascript").is_inline());
        assert!(!ct("img/png").is_inline());
        assert!(!ct("application/octet-stream").is_inline());
    }

    #[test]
    fn keeps_the_value_verbatim() {
        assert_eq!(ContentType::parse("img/png").unwrap().as_str(), "img/png");
        assert!(ContentType::parse("a\nb").is_err());
        assert!(ContentType::parse("").is_err());
    }
}
