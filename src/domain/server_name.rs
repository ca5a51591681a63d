use std::fmt;

use super::ParseError;

/// A Matrix server name (`hostname [":" port]`), checked against the spec's grammar
/// and capped at 255 bytes. Server names are case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerName(String);

impl ServerName {
    pub const MAX_LEN: usize = 255;

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.len() > Self::MAX_LEN {
            return Err(ParseError("server name is longer than 255 bytes"));
        }
        ruma_common::ServerName::parse(s).map_err(|_| ParseError("invalid server name"))?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_grammar() {
        for ok in [
            "example.org",
            "localhost",
            "example.org:8448",
            "1.2.3.4",
            "1.2.3.4:1234",
            "[::1]",
            "[1234:5678::abcd]:8448",
            "my-server",
        ] {
            assert!(ServerName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_the_rest() {
        let long = format!("{}.org", "a".repeat(252));
        for bad in [
            "",
            "exa mple.org",
            "example.org:",
            "example.org:123456",
            "example.org:port",
            "[::1",
            "[not-ipv6]",
            "ex/ample",
            "..%2F",
            "exämple.org",
            long.as_str(),
        ] {
            assert!(ServerName::parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
