use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::auth::Authed;
use super::error::ApiError;
use super::query;
use crate::domain::{ContentType, FileName};
use crate::media::{MediaService, UploadMeta};

/// `/create` takes an empty JSON object; anything near this size is not one.
const CREATE_BODY_LIMIT: usize = 64 * 1024;

#[derive(Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

fn upload_meta(req: &HttpRequest) -> Result<UploadMeta, ApiError> {
    let q: UploadQuery = query::parse(req)?;
    let filename = q
        .filename
        .filter(|f| !f.is_empty())
        .map(|f| FileName::parse(&f))
        .transpose()?;
    let content_type = match req.headers().get(CONTENT_TYPE) {
        None => None,
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| ApiError::invalid_param("Invalid Content-Type"))?;
            Some(ContentType::parse(v)?)
        }
    };
    let declared_len = match req.headers().get(CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ApiError::invalid_param("Invalid Content-Length"))?,
        ),
    };
    Ok(UploadMeta {
        content_type,
        filename,
        declared_len,
    })
}

/// # `POST /_matrix/media/v3/upload`
pub async fn upload(
    req: HttpRequest,
    auth: Authed,
    body: web::Payload,
    media: web::Data<MediaService>,
) -> Result<HttpResponse, ApiError> {
    let meta = upload_meta(&req)?;
    let mxc = media.upload(&auth.0.user_id, meta, body).await?;
    Ok(HttpResponse::Ok().json(json!({ "content_uri": mxc.to_string() })))
}

/// # `POST /_matrix/media/v1/create`
pub async fn create(
    auth: Authed,
    body: web::Payload,
    media: web::Data<MediaService>,
) -> Result<HttpResponse, ApiError> {
    // The spec asks for `{}`; clients (and Complement) also send nothing at all.
    let body = body
        .to_bytes_limited(CREATE_BODY_LIMIT)
        .await
        .map_err(|_| ApiError::not_json("Request body must be a small JSON object"))?
        .map_err(|_| ApiError::not_json("Request body could not be read"))?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| ApiError::not_json("Request body must be a JSON object"))?;
        if !value.is_object() {
            return Err(ApiError::not_json("Request body must be a JSON object"));
        }
    }
    let reservation = media.create(&auth.0.user_id).await?;
    Ok(HttpResponse::Ok().json(json!({
        "content_uri": reservation.mxc.to_string(),
        "unused_expires_at": reservation.expires_ts,
    })))
}

/// # `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
pub async fn upload_to(
    req: HttpRequest,
    auth: Authed,
    body: web::Payload,
    media: web::Data<MediaService>,
) -> Result<HttpResponse, ApiError> {
    let mxc = super::mxc_from_path(&req)?;
    let meta = upload_meta(&req)?;
    // All checks (owner, already uploaded, expired) happen before the body is read.
    media.check_pending_upload(&auth.0.user_id, &mxc).await?;
    media.upload_pending(&mxc, meta, body).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}
