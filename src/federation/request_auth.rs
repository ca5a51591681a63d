//! X-Matrix request authentication: signing our requests to other servers and checking
//! theirs. ruma-federation-api parses the header (any parameter order, optional spaces,
//! quoted or bare values) and builds the canonical JSON of method, URI, origin and
//! destination that is signed.

use ruma_common::serde::Base64;
use ruma_common::{OwnedServerName, ServerName as RumaServerName};
use ruma_federation_api::authentication::{XMatrix, XMatrixSigningInput};

use super::ServerKey;
use crate::domain::ServerName;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestAuthError {
    /// No usable X-Matrix credentials.
    #[error("malformed X-Matrix authorization: {0}")]
    Malformed(String),
    /// Signed for another server.
    #[error("the request is for another destination")]
    WrongDestination,
    /// The signature does not match the request and key.
    #[error("bad signature: {0}")]
    BadSignature(String),
}

/// The request as signed: method and raw URI (path and query, exactly as sent).
fn request(method: &str, uri: &str) -> Result<http::Request<Vec<u8>>, RequestAuthError> {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Vec::new())
        .map_err(|e| RequestAuthError::Malformed(e.to_string()))
}

fn ruma_name(name: &ServerName) -> OwnedServerName {
    <&RumaServerName>::try_from(name.as_str())
        .expect("our server names follow Matrix's grammar")
        .to_owned()
}

/// The `Authorization` header value for a body-less `method uri` request from `origin`
/// to `destination`, signed with `key`.
pub fn authorization(
    key: &ServerKey,
    origin: &ServerName,
    destination: &ServerName,
    method: &str,
    uri: &str,
) -> String {
    let request = request(method, uri).expect("our own request URIs are valid");
    let input = XMatrixSigningInput::new(ruma_name(origin), ruma_name(destination), key.pair());
    XMatrix::sign_http_request(&request, input)
        .expect("a body-less request always signs")
        .to_string()
}

/// Some servers send `sig` (base64, with `/` and `+`) unquoted, which is not an HTTP
/// token, so the standard parser refuses it; Synapse accepts it. This quotes every bare
/// parameter value of an `X-Matrix` header (none of the values may contain `,` or `"`)
/// so the standard parser can read it. None if the header is not of that shape.
fn quote_bare_values(header: &str) -> Option<String> {
    let (scheme, params) = header.trim().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case(XMatrix::AUTH_SCHEME) {
        return None;
    }
    let quoted: Option<Vec<String>> = params
        .split(',')
        .map(|param| {
            let (name, value) = param.split_once('=')?;
            let value = value.trim();
            let bare = value.trim_matches('"');
            (!bare.contains(['"', '\\'])).then(|| format!("{}=\"{bare}\"", name.trim()))
        })
        .collect();
    Some(format!("{} {}", XMatrix::AUTH_SCHEME, quoted?.join(",")))
}

/// Parsed `X-Matrix` credentials of an incoming request.
#[derive(Debug, Clone)]
pub struct Credentials(XMatrix);

impl Credentials {
    /// Parse an `Authorization` header value.
    pub fn parse(header: &str) -> Result<Self, RequestAuthError> {
        XMatrix::parse(header)
            .or_else(|e| match quote_bare_values(header) {
                Some(quoted) => XMatrix::parse(quoted),
                None => Err(e),
            })
            .map(Self)
            .map_err(|e| RequestAuthError::Malformed(e.to_string()))
    }

    /// The server that claims to have signed.
    pub fn origin(&self) -> &str {
        self.0.origin.as_str()
    }

    /// The id (`ed25519:…`) of the key it says it signed with.
    pub fn key_id(&self) -> &str {
        self.0.key.as_str()
    }

    /// Check that the request was meant for `us` (a request without a destination is
    /// accepted, as the spec asks for older servers) and signed by `public_key`, the
    /// origin's key with [`Self::key_id`].
    pub fn verify(
        &self,
        us: &ServerName,
        method: &str,
        uri: &str,
        public_key: &str,
    ) -> Result<(), RequestAuthError> {
        if self
            .0
            .destination
            .as_ref()
            .is_some_and(|d| d.as_str() != us.as_str())
        {
            return Err(RequestAuthError::WrongDestination);
        }
        let key = Base64::parse(public_key)
            .map_err(|e| RequestAuthError::BadSignature(format!("unusable key: {e}")))?;
        let keys = ruma_signatures::PublicKeyMap::from([(
            self.origin().to_owned(),
            ruma_signatures::PublicKeySet::from([(self.key_id().to_owned(), key)]),
        )]);
        self.0
            .verify_http_request(&request(method, uri)?, &ruma_name(us), &keys)
            .map_err(|e| RequestAuthError::BadSignature(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    const URI: &str = "/_matrix/federation/v1/media/download/abc?timeout_ms=2000";

    fn signed() -> (ServerKey, String) {
        let key = ServerKey::generate();
        let header = authorization(&key, &name("hs1.test"), &name("hs2.test"), "GET", URI);
        (key, header)
    }

    #[test]
    fn our_signatures_verify_for_the_destination() {
        let (key, header) = signed();
        let creds = Credentials::parse(&header).unwrap();
        assert_eq!(creds.origin(), "hs1.test");
        assert_eq!(creds.key_id(), key.key_id());
        creds
            .verify(&name("hs2.test"), "GET", URI, &key.public_key())
            .unwrap();
    }

    #[test]
    fn another_destination_uri_method_or_key_is_refused() {
        let (key, header) = signed();
        let creds = Credentials::parse(&header).unwrap();
        assert_eq!(
            creds.verify(&name("hs3.test"), "GET", URI, &key.public_key()),
            Err(RequestAuthError::WrongDestination)
        );
        let bad = |method, uri, public: &str| {
            matches!(
                creds.verify(&name("hs2.test"), method, uri, public),
                Err(RequestAuthError::BadSignature(_))
            )
        };
        assert!(bad(
            "GET",
            "/_matrix/federation/v1/media/download/abd?timeout_ms=2000",
            &key.public_key()
        ));
        assert!(bad(
            "GET",
            "/_matrix/federation/v1/media/download/abc",
            &key.public_key()
        ));
        assert!(bad("POST", URI, &key.public_key()));
        assert!(bad("GET", URI, &ServerKey::generate().public_key()));
    }

    #[test]
    fn headers_are_parsed_tolerantly() {
        let (key, header) = signed();
        let creds = Credentials::parse(&header).unwrap();
        let sig = header
            .split("sig=")
            .nth(1)
            .unwrap()
            .trim_matches('"')
            .to_owned();
        // Other parameter order, spaces, bare and quoted values, no destination.
        for variant in [
            format!(
                r#"X-Matrix sig="{sig}", key="{}", origin=hs1.test, destination="hs2.test""#,
                key.key_id()
            ),
            format!(
                r#"X-Matrix origin="hs1.test",key="{}",sig={sig}"#,
                key.key_id()
            ),
            format!(
                r#"x-matrix   origin = "hs1.test" ,  key="{}", sig="{sig}""#,
                key.key_id()
            ),
        ] {
            let again = Credentials::parse(&variant).unwrap_or_else(|e| panic!("{variant}: {e}"));
            assert_eq!(
                (again.origin(), again.key_id()),
                (creds.origin(), creds.key_id())
            );
            again
                .verify(&name("hs2.test"), "GET", URI, &key.public_key())
                .unwrap_or_else(|e| panic!("{variant}: {e}"));
        }
        for broken in [
            "",
            "Bearer abc",
            "X-Matrix origin=hs1.test",
            "X-Matrix key=\"ed25519:a\",sig=x",
        ] {
            assert!(
                matches!(
                    Credentials::parse(broken),
                    Err(RequestAuthError::Malformed(_))
                ),
                "{broken:?}"
            );
        }
    }
}
