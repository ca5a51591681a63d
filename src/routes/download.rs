use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, CACHE_CONTROL, ContentRangeSpec, ETAG};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::auth::Authed;
use super::error::ApiError;
use super::headers::content_disposition;
use super::range::{self, RangeOutcome};
use super::respond;
use super::{mxc_from_path, query};
use crate::domain::FileName;
use crate::media::{Access, MediaService};

/// The spec's default for `timeout_ms`.
const DEFAULT_TIMEOUT_MS: u64 = 20_000;

#[derive(Deserialize)]
struct DownloadQuery {
    timeout_ms: Option<u64>,
    allow_remote: Option<bool>,
    /// Accepted for compatibility; media is always served directly.
    #[allow(dead_code)]
    allow_redirect: Option<bool>,
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]`
pub async fn authenticated(
    req: HttpRequest,
    _auth: Authed,
    media: web::Data<MediaService>,
) -> Result<HttpResponse, ApiError> {
    let q: DownloadQuery = query::parse(&req)?;
    serve(&req, &media, Access::Authenticated, q.timeout_ms).await
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}[/{fileName}]` (deprecated, unauthenticated)
pub async fn legacy(
    req: HttpRequest,
    media: web::Data<MediaService>,
) -> Result<HttpResponse, ApiError> {
    let q: DownloadQuery = query::parse(&req)?;
    let access = Access::Legacy {
        allow_remote: q.allow_remote.unwrap_or(true),
    };
    serve(&req, &media, access, q.timeout_ms).await
}

async fn serve(
    req: &HttpRequest,
    media: &MediaService,
    access: Access,
    timeout_ms: Option<u64>,
) -> Result<HttpResponse, ApiError> {
    let mxc = mxc_from_path(req)?;
    let path_name = match req.match_info().load::<FileNameSegment>() {
        Ok(FileNameSegment {
            file_name: Some(name),
        }) => Some(FileName::parse(&name)?),
        _ => None,
    };
    let wait = Duration::from_millis(timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
    let ready = media.fetch(&mxc, access, wait).await?;
    let content = ready.content;

    let etag = respond::etag(&content.sha256);
    if let Some(response) = respond::not_modified(req, &etag, access) {
        return Ok(response);
    }

    let filename = path_name
        .as_ref()
        .or(content.filename.as_ref())
        .map(FileName::as_str);
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, content.content_type.as_str()))
        .insert_header((
            header::CONTENT_DISPOSITION,
            content_disposition(content.content_type.is_inline(), filename),
        ))
        .insert_header((ETAG, etag.clone()))
        .insert_header((CACHE_CONTROL, respond::cache_control(access)))
        .insert_header((header::ACCEPT_RANGES, "bytes"));

    let size = content.size;
    let range = match range::evaluate(req, size, &etag.to_string()) {
        RangeOutcome::Full => None,
        RangeOutcome::Partial(r) => Some(r),
        RangeOutcome::Unsatisfiable => return Err(ApiError::range_not_satisfiable(size)),
    };
    if let Some(r) = &range {
        response.status(StatusCode::PARTIAL_CONTENT).insert_header((
            header::CONTENT_RANGE,
            header::ContentRange(ContentRangeSpec::Bytes {
                range: Some((r.start, r.end - 1)),
                instance_length: Some(size),
            }),
        ));
    }
    respond::body(req, media, response, &content.sha256, size, range).await
}

#[derive(Deserialize)]
struct FileNameSegment {
    file_name: Option<String>,
}
