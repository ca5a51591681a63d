use std::fmt;

use rand::Rng;

use super::ParseError;

/// The media-id part of an `mxc://` URI: 1 to 255 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MediaId(String);

/// Length of the media ids this server generates (about 190 bits of randomness).
const GENERATED_LEN: usize = 32;
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

impl MediaId {
    pub const MAX_LEN: usize = 255;

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(ParseError("media id must be 1 to 255 characters long"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ParseError(
                "media id may only contain A-Z, a-z, 0-9, '_' and '-'",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// A fresh random id from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let id = (0..GENERATED_LEN)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MediaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_spec_charset() {
        for ok in [
            "a",
            "AQwafuaFswefuhsfAFAgsw",
            "under_score-dash",
            &"x".repeat(255),
        ] {
            assert!(MediaId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        let long = "x".repeat(256);
        let cases = [
            ("", "empty"),
            (long.as_str(), "too long"),
            ("a.b", "dot"),
            ("..", "traversal"),
            ("a/b", "slash"),
            ("a%2Fb", "encoded slash"),
            ("a b", "space"),
            ("ünï", "unicode"),
            ("a\0b", "nul"),
        ];
        for (input, why) in cases {
            assert!(MediaId::parse(input).is_err(), "{why} accepted: {input:?}");
        }
    }

    #[test]
    fn generated_ids_are_valid_long_and_distinct() {
        let a = MediaId::generate();
        let b = MediaId::generate();
        assert!(a.as_str().len() >= 24);
        assert_eq!(MediaId::parse(a.as_str()).unwrap(), a);
        assert_ne!(a, b);
    }
}
