use std::fmt;

use super::ParseError;

/// A file name supplied by a client (`?filename=` or the `{fileName}` path segment).
/// Any Unicode is allowed; it is never used as a path, only echoed back in
/// `Content-Disposition`, encoded so that every RFC 6266 parser recovers it exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName(String);

impl FileName {
    pub const MAX_LEN: usize = 1024;

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(ParseError("file name must be 1 to 1024 bytes long"));
        }
        if s.chars().any(|c| c.is_control()) {
            return Err(ParseError("file name contains control characters"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_unicode_and_punctuation() {
        for ok in [
            "War and Peace.pdf",
            "ünïcödé ☃.txt",
            "a;b\"c'.png",
            "..",
            "a/b",
        ] {
            assert_eq!(FileName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_empty_control_and_huge() {
        assert!(FileName::parse("").is_err());
        assert!(FileName::parse("a\nb").is_err());
        assert!(FileName::parse(&"x".repeat(1025)).is_err());
    }
}
