use std::fmt;
use std::str::FromStr;

use super::{MediaId, ParseError, ServerName};

/// An `mxc://<server-name>/<media-id>` URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mxc {
    pub server_name: ServerName,
    pub media_id: MediaId,
}

impl Mxc {
    pub fn new(server_name: ServerName, media_id: MediaId) -> Self {
        Self {
            server_name,
            media_id,
        }
    }
}

impl FromStr for Mxc {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("mxc://")
            .ok_or(ParseError("mxc URI must start with mxc://"))?;
        let (server, id) = rest
            .split_once('/')
            .ok_or(ParseError("mxc URI must contain a media id"))?;
        Ok(Self::new(ServerName::parse(server)?, MediaId::parse(id)?))
    }
}

impl fmt::Display for Mxc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mxc://{}/{}", self.server_name, self.media_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let m: Mxc = "mxc://example.org:8448/abc_DEF-123".parse().unwrap();
        assert_eq!(m.server_name.as_str(), "example.org:8448");
        assert_eq!(m.media_id.as_str(), "abc_DEF-123");
        assert_eq!(m.to_string(), "mxc://example.org:8448/abc_DEF-123");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "http://example.org/abc",
            "mxc://example.org",
            "mxc://example.org/",
            "mxc://example.org/a/b",
            "mxc:///abc",
        ] {
            assert!(bad.parse::<Mxc>().is_err(), "accepted {bad}");
        }
    }
}
