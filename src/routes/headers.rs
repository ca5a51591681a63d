//! Response headers shared by the media endpoints.

use actix_web::http::header::{
    ContentDisposition, DispositionParam, DispositionType, ExtendedValue,
};
use actix_web::middleware::DefaultHeaders;

/// The spec's recommended policy for served content.
pub const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';";

/// Headers on every response: CORS (spec "Web Browser Clients") and the content
/// security headers (set everywhere, so no served body can miss them).
pub fn default_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("Access-Control-Allow-Origin", "*"))
        .add((
            "Access-Control-Allow-Methods",
            "GET, HEAD, POST, PUT, DELETE, OPTIONS",
        ))
        .add((
            "Access-Control-Allow-Headers",
            "X-Requested-With, Content-Type, Authorization, Range",
        ))
        .add((
            "Access-Control-Expose-Headers",
            "Content-Disposition, Content-Range, Content-Length, ETag",
        ))
        .add(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        .add(("Cross-Origin-Resource-Policy", "cross-origin"))
        .add(("X-Content-Type-Options", "nosniff"))
}

/// `inline` or `attachment`, with the file name encoded so that any RFC 6266 parser
/// recovers it exactly: a (quoted) token where the name is one, else `filename*` (RFC 8187
/// percent-encoded UTF-8), which leaves no quoting rules for a parser to get wrong.
pub fn content_disposition(inline: bool, filename: Option<&str>) -> ContentDisposition {
    let disposition = if inline {
        DispositionType::Inline
    } else {
        DispositionType::Attachment
    };
    let parameters = match filename {
        None => vec![],
        Some(name) if is_token(name) => vec![DispositionParam::Filename(name.to_owned())],
        Some(name) => vec![DispositionParam::FilenameExt(ExtendedValue {
            charset: actix_web::http::header::Charset::Ext("utf-8".to_owned()),
            language_tag: None,
            value: name.as_bytes().to_vec(),
        })],
    };
    ContentDisposition {
        disposition,
        parameters,
    }
}

/// An RFC 9110 token: visible ASCII except the separators.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions() {
        assert_eq!(content_disposition(true, None).to_string(), "inline");
        assert_eq!(
            content_disposition(false, Some("a.txt")).to_string(),
            "attachment; filename=\"a.txt\""
        );
        assert_eq!(
            content_disposition(false, Some("a \"b\";c.txt")).to_string(),
            "attachment; filename*=utf-8''a%20%22b%22%3Bc.txt"
        );
        assert_eq!(
            content_disposition(true, Some("ü ☃.png")).to_string(),
            "inline; filename*=utf-8''%C3%BC%20%E2%98%83.png"
        );
    }
}
