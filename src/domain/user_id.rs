use std::fmt;

use super::ParseError;

/// A Matrix user id as reported by the homeserver (`@localpart:server`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        ruma_common::UserId::parse(s).map_err(|_| ParseError("invalid user id"))?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_ids() {
        assert!(UserId::parse("@alice:example.org").is_ok());
        assert!(UserId::parse("alice").is_err());
        assert!(UserId::parse("@alice").is_err());
    }
}
