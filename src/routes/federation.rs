//! Federation endpoints. For now: the server's published signing key, served when
//! `federation.serve_keys` is on.

use std::time::Duration;

use actix_web::{HttpResponse, web};

use crate::domain::ServerName;
use crate::federation::ServerKey;
use crate::media::now_ms;

/// What `/_matrix/key/v2/server` publishes.
pub struct KeyServer {
    pub key: ServerKey,
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
