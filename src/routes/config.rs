use actix_web::{HttpResponse, web};
use serde_json::json;

use super::auth::Authed;
use super::error::ApiError;
use crate::media::MediaService;

/// # `GET /_matrix/client/v1/media/config` (and the legacy `/_matrix/media/v3/config`)
pub async fn config(_: Authed, media: web::Data<MediaService>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({ "m.upload.size": media.max_upload_bytes() })))
}
