//! HTTP layer: actix handlers that extract, call the media service, and respond.

mod auth;
mod config;
mod download;
mod error;
pub mod federation;
mod headers;
pub mod multipart;
mod query;
mod range;
mod respond;
mod thumbnail;
mod upload;

use std::time::Instant;

use actix_web::body::EitherBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, Route, web};
use futures_util::FutureExt;
use futures_util::future::{self, Either};
use serde::Deserialize;

use crate::domain::{MediaId, Mxc, ServerName};

pub use error::ApiError;
pub use headers::default_headers;

/// Mount every endpoint. Unknown paths and wrong methods answer `M_UNRECOGNIZED`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for version in ["v3", "r0", "v1"] {
        let base = format!("/_matrix/media/{version}");
        cfg.service(resource(
            &format!("{base}/upload"),
            [web::post().to(upload::upload)],
        ));
        cfg.service(resource(
            &format!("{base}/config"),
            [web::get().to(config::config)],
        ));
        for path in [
            "/download/{server_name}/{media_id}",
            "/download/{server_name}/{media_id}/{file_name}",
        ] {
            cfg.service(resource(
                &format!("{base}{path}"),
                [
                    web::get().to(download::legacy),
                    web::head().to(download::legacy),
                ],
            ));
        }
        cfg.service(resource(
            &format!("{base}/thumbnail/{{server_name}}/{{media_id}}"),
            [
                web::get().to(thumbnail::legacy),
                web::head().to(thumbnail::legacy),
            ],
        ));
    }
    cfg.service(resource(
        "/_matrix/media/v3/upload/{server_name}/{media_id}",
        [web::put().to(upload::upload_to)],
    ));
    cfg.service(resource(
        "/_matrix/media/v1/create",
        [web::post().to(upload::create)],
    ));

    let client = "/_matrix/client/v1/media";
    cfg.service(resource(
        &format!("{client}/thumbnail/{{server_name}}/{{media_id}}"),
        [
            web::get().to(thumbnail::authenticated),
            web::head().to(thumbnail::authenticated),
        ],
    ));
    cfg.service(resource(
        &format!("{client}/config"),
        [web::get().to(config::config)],
    ));
    for path in [
        "/download/{server_name}/{media_id}",
        "/download/{server_name}/{media_id}/{file_name}",
    ] {
        cfg.service(resource(
            &format!("{client}{path}"),
            [
                web::get().to(download::authenticated),
                web::head().to(download::authenticated),
            ],
        ));
    }
}

fn resource<const N: usize>(path: &str, routes: [Route; N]) -> actix_web::Resource {
    routes
        .into_iter()
        .fold(web::resource(path), |r, route| r.route(route))
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(ApiError::method_not_allowed())
        }))
}

/// For everything no resource matched.
pub async fn unrecognized() -> Result<HttpResponse, ApiError> {
    Err(ApiError::unrecognized())
}

#[derive(Deserialize)]
struct MxcSegments {
    server_name: String,
    media_id: String,
}

/// The `{server_name}/{media_id}` of the matched path, checked.
fn mxc_from_path(req: &HttpRequest) -> Result<Mxc, ApiError> {
    let seg: MxcSegments = req
        .match_info()
        .load()
        .map_err(|_| ApiError::invalid_param("Invalid media path"))?;
    Ok(Mxc::new(
        ServerName::parse(&seg.server_name)?,
        MediaId::parse(&seg.media_id)?,
    ))
}

/// Answer CORS preflight (`OPTIONS`) for every path without running endpoint logic,
/// and log every request (path only: query strings may carry access tokens).
pub fn preflight_and_log<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
{
    if req.method() == Method::OPTIONS {
        let response = req
            .into_response(HttpResponse::NoContent().finish())
            .map_into_right_body();
        return Either::Left(future::ready(Ok(response)));
    }
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    Either::Right(srv.call(req).map(move |result| {
        let response = result?;
        tracing::info!(
            %method,
            %path,
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request"
        );
        Ok(response.map_into_left_body())
    }))
}
