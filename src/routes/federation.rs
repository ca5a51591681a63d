//! Federation endpoints: our media for other servers (`/_matrix/federation/v1/media/*`,
//! X-Matrix authenticated, `multipart/mixed`), and, when `federation.serve_keys` is on,
//! the server's published signing key.

use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::header::{AUTHORIZATION, CACHE_CONTROL, ContentDisposition};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::error::ApiError;
use super::headers::content_disposition;
use super::multipart::MixedBody;
use super::{query, thumbnail};
use crate::domain::{ContentHash, ContentType, MediaId, Mxc, ServerName};
use crate::federation::{Credentials, FederationClient, KeyRing, RequestAuthError, ServerKey};
use crate::media::{Access, MediaService, now_ms};

/// What `/_matrix/key/v2/server` publishes.
pub struct KeyServer {
    pub key: std::sync::Arc<ServerKey>,
    pub server_name: ServerName,
    /// How long others may cache it.
    pub validity: Duration,
}

pub fn configure_key_server(cfg: &mut web::ServiceConfig, key_server: web::Data<KeyServer>) {
    cfg.app_data(key_server).service(super::resource(
        "/_matrix/key/v2/server",
        [web::get().to(server_keys)],
    ));
}

/// `GET /_matrix/key/v2/server`: our current key, signed by itself.
async fn server_keys(keys: web::Data<KeyServer>) -> HttpResponse {
    let validity = i64::try_from(keys.validity.as_millis()).unwrap_or(i64::MAX);
    let body = keys
        .key
        .server_keys(&keys.server_name, now_ms().saturating_add(validity));
    HttpResponse::Ok()
        .content_type("application/json")
        .body(ruma_common::canonical_json::CanonicalJsonValue::Object(body).to_string())
}

/// What the inbound media endpoints need to check requests.
pub struct Inbound {
    pub client: FederationClient,
    pub keys: KeyRing,
}

pub fn configure_media(cfg: &mut web::ServiceConfig) {
    let base = "/_matrix/federation/v1/media";
    cfg.service(super::resource(
        &format!("{base}/download/{{media_id}}"),
        [web::get().to(download)],
    ))
    .service(super::resource(
        &format!("{base}/thumbnail/{{media_id}}"),
        [web::get().to(thumbnail)],
    ));
}

/// Check the request's X-Matrix signature; returns the origin server.
async fn authenticate(req: &HttpRequest, inbound: &Inbound) -> Result<ServerName, ApiError> {
    let header = req
        .headers()
        .get_all(AUTHORIZATION)
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.trim_start().starts_with("X-Matrix"))
        .ok_or_else(|| RequestAuthError::Malformed("no X-Matrix authorization".into()))?;
    let credentials = Credentials::parse(header)?;
    let origin = ServerName::parse(credentials.origin())
        .map_err(|_| RequestAuthError::Malformed("invalid origin".into()))?;
    let us = inbound.client.server_name();
    if !inbound.client.allows(&origin) {
        return Err(crate::federation::KeyRingError::Fetch(
            crate::federation::FederationError::Denied(origin),
        )
        .into());
    }
    let key = inbound
        .keys
        .verify_key(&origin, credentials.key_id(), now_ms())
        .await?;
    let uri = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.path(), |pq| pq.as_str());
    credentials.verify(us, req.method().as_str(), uri, &key)?;
    Ok(origin)
}

#[derive(Deserialize)]
struct MediaIdSegment {
    media_id: String,
}

fn our_mxc(req: &HttpRequest, us: &ServerName) -> Result<Mxc, ApiError> {
    let seg: MediaIdSegment = req
        .match_info()
        .load()
        .map_err(|_| ApiError::invalid_param("Invalid media path"))?;
    Ok(Mxc::new(us.clone(), MediaId::parse(&seg.media_id)?))
}

#[derive(Deserialize)]
struct DownloadQuery {
    timeout_ms: Option<u64>,
}

/// The spec's default for `timeout_ms`.
const DEFAULT_TIMEOUT_MS: u64 = 20_000;

/// # `GET /_matrix/federation/v1/media/download/{mediaId}`
async fn download(
    req: HttpRequest,
    inbound: web::Data<Inbound>,
    media: web::Data<MediaService>,
) -> Result<HttpResponse, ApiError> {
    let mxc = requested_media(&req, &inbound).await?;
    let q: DownloadQuery = query::parse(&req)?;
    let wait = Duration::from_millis(q.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
    let c = media.fetch(&mxc, Access::Federation, wait).await?.content;
    let name = c.filename.as_ref().map(|f| f.as_str());
    let disposition = content_disposition(c.content_type.is_inline(), name);
    respond(&media, &c.content_type, disposition, &c.sha256, c.size).await
}

/// # `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
async fn thumbnail(
    req: HttpRequest,
    inbound: web::Data<Inbound>,
    media: web::Data<MediaService>,
) -> Result<HttpResponse, ApiError> {
    let mxc = requested_media(&req, &inbound).await?;
    let p = thumbnail::parse(&req)?;
    let thumb = media
        .thumbnail(&mxc, p.spec, p.animated, Access::Federation, p.timeout)
        .await?;
    let c = thumb.content;
    let disposition = content_disposition(true, Some(&thumbnail::file_name(&c.content_type)));
    respond(&media, &c.content_type, disposition, &c.sha256, c.size).await
}

/// The (our own) media a signed request asks for.
async fn requested_media(req: &HttpRequest, inbound: &Inbound) -> Result<Mxc, ApiError> {
    let origin = authenticate(req, inbound).await?;
    let mxc = our_mxc(req, inbound.client.server_name())?;
    tracing::debug!(%origin, %mxc, "federation media request");
    Ok(mxc)
}

/// A `multipart/mixed` answer carrying the blob.
async fn respond(
    media: &MediaService,
    content_type: &ContentType,
    disposition: ContentDisposition,
    sha256: &ContentHash,
    size: u64,
) -> Result<HttpResponse, ApiError> {
    let disposition = &disposition.to_string();
    let body = MixedBody::new();
    let file = media.open(sha256, size, None).await?;
    let len = body.body_len(content_type.as_str(), disposition, size);
    Ok(HttpResponse::Ok()
        .content_type(body.content_type())
        .insert_header((CACHE_CONTROL, "no-store"))
        .body(SizedStream::new(
            len,
            body.media(content_type.as_str(), disposition, file),
        )))
}
