use std::time::Duration;

use actix_web::http::header::{self, CACHE_CONTROL, ETAG};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::auth::Authed;
use super::error::ApiError;
use super::headers::content_disposition;
use super::respond;
use super::{mxc_from_path, query};
use crate::domain::{ContentType, Method, ThumbnailSpec};
use crate::media::{Access, MediaService};

const DEFAULT_TIMEOUT_MS: u64 = 20_000;

/// Everything as text, so a bad value is reported as the parameter it is.
#[derive(Deserialize)]
struct ThumbnailQuery {
    width: Option<String>,
    height: Option<String>,
    method: Option<String>,
    animated: Option<String>,
    timeout_ms: Option<String>,
    allow_remote: Option<String>,
}

pub(super) struct Parsed {
    pub(super) spec: ThumbnailSpec,
    pub(super) animated: bool,
    pub(super) timeout: Duration,
    allow_remote: bool,
}

pub(super) fn parse(req: &HttpRequest) -> Result<Parsed, ApiError> {
    let q: ThumbnailQuery = query::parse(req)?;
    let dim = |v: Option<String>, name: &'static str| -> Result<u32, ApiError> {
        let v = v.ok_or_else(|| ApiError::missing_param(format!("Missing parameter: {name}")))?;
        v.parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ApiError::invalid_param(format!("{name} must be a positive integer")))
    };
    let width = dim(q.width, "width")?;
    let height = dim(q.height, "height")?;
    let method = match q.method.as_deref() {
        None => Method::Scale,
        Some(m) => Method::parse(m)?,
    };
    let spec = ThumbnailSpec::new(width, height, method)?;
    let flag = |v: Option<String>, name: &'static str, default: bool| match v.as_deref() {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(ApiError::invalid_param(format!(
            "{name} must be true or false"
        ))),
    };
    let animated = flag(q.animated, "animated", false)?;
    let allow_remote = flag(q.allow_remote, "allow_remote", true)?;
    let timeout_ms = match q.timeout_ms {
        None => DEFAULT_TIMEOUT_MS,
        Some(t) => t
            .parse()
            .map_err(|_| ApiError::invalid_param("timeout_ms must be an integer"))?,
    };
    Ok(Parsed {
        spec,
        animated,
        timeout: Duration::from_millis(timeout_ms),
        allow_remote,
    })
}

/// # `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
pub async fn authenticated(
    req: HttpRequest,
    _auth: Authed,
    media: web::Data<MediaService>,
) -> Result<HttpResponse, ApiError> {
    let p = parse(&req)?;
    serve(&req, &media, Access::Authenticated, p).await
}

/// # `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}` (deprecated, unauthenticated)
pub async fn legacy(
    req: HttpRequest,
    media: web::Data<MediaService>,
) -> Result<HttpResponse, ApiError> {
    let p = parse(&req)?;
    let access = Access::Legacy {
        allow_remote: p.allow_remote,
    };
    serve(&req, &media, access, p).await
}

async fn serve(
    req: &HttpRequest,
    media: &MediaService,
    access: Access,
    p: Parsed,
) -> Result<HttpResponse, ApiError> {
    let mxc = mxc_from_path(req)?;
    let thumb = media
        .thumbnail(&mxc, p.spec, p.animated, access, p.timeout)
        .await?;
    let content = thumb.content;
    let etag = respond::etag(&content.sha256);
    if let Some(response) = respond::not_modified(req, &etag, access) {
        return Ok(response);
    }
    let name = file_name(&content.content_type);
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, content.content_type.as_str()))
        .insert_header((
            header::CONTENT_DISPOSITION,
            content_disposition(true, Some(&name)),
        ))
        .insert_header((ETAG, etag))
        .insert_header((CACHE_CONTROL, respond::cache_control(access)));
    respond::body(req, media, response, &content.sha256, content.size, None).await
}

/// `thumbnail.<ext>` for a thumbnail of `content_type`.
pub(super) fn file_name(content_type: &ContentType) -> String {
    let extension = match content_type.essence().as_str() {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => "bin",
    };
    format!("thumbnail.{extension}")
}
