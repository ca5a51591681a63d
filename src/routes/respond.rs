//! What downloads and thumbnails share: cache validators, 304s, HEAD and the body stream.

use std::ops::Range;

use actix_web::body::SizedStream;
use actix_web::http::header::{CACHE_CONTROL, ETAG, EntityTag, Header, IfNoneMatch};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};

use super::error::ApiError;
use crate::domain::ContentHash;
use crate::media::{Access, MediaService};
use crate::storage::StorageError;

/// Content is immutable; authenticated media must not sit in shared caches.
pub fn cache_control(access: Access) -> &'static str {
    match access {
        Access::Authenticated => "private, max-age=31536000, immutable",
        Access::Legacy { .. } => "public, max-age=31536000, immutable",
        Access::Federation => "private, max-age=31536000, immutable",
    }
}

/// Blobs are content-addressed, so their hash is a strong ETag.
pub fn etag(sha256: &ContentHash) -> EntityTag {
    EntityTag::new_strong(sha256.to_hex())
}

/// A 304 when `If-None-Match` matches `etag`. Called after authentication.
pub fn not_modified(req: &HttpRequest, etag: &EntityTag, access: Access) -> Option<HttpResponse> {
    let matched = match IfNoneMatch::parse(req).ok()? {
        IfNoneMatch::Any => true,
        IfNoneMatch::Items(tags) => tags.iter().any(|t| t.weak_eq(etag)),
    };
    matched.then(|| {
        HttpResponse::NotModified()
            .insert_header((ETAG, etag.clone()))
            .insert_header((CACHE_CONTROL, cache_control(access)))
            .finish()
    })
}

/// Finish `response` with `length` bytes of the blob (or of `range` of it); for HEAD,
/// only the headers.
pub async fn body(
    req: &HttpRequest,
    media: &MediaService,
    mut response: HttpResponseBuilder,
    sha256: &ContentHash,
    size: u64,
    range: Option<Range<u64>>,
) -> Result<HttpResponse, ApiError> {
    let length = range.as_ref().map_or(size, |r| r.end - r.start);
    if req.method() == actix_web::http::Method::HEAD {
        // actix sends the headers of a sized body and skips the body itself.
        let nothing = futures_util::stream::empty::<Result<web::Bytes, StorageError>>();
        return Ok(response.body(SizedStream::new(length, nothing)));
    }
    let stream = media.open(sha256, size, range).await?;
    Ok(response.body(SizedStream::new(length, stream)))
}
