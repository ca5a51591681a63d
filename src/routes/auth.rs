//! The `Authed` extractor: an access token from `Authorization: Bearer` or
//! `?access_token=`, resolved through the [`Authenticator`].

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use serde::Deserialize;

use super::error::ApiError;
use crate::auth::{AuthError, Authenticator, Requester};

/// A request made with a valid access token.
pub struct Authed(pub Requester);

#[derive(Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

fn token_of(req: &HttpRequest) -> Result<String, AuthError> {
    if let Some(value) = req.headers().get(AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::UnknownToken)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::UnknownToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::MissingToken);
        }
        return Ok(token.trim().to_owned());
    }
    // Deprecated since v1.11 but required through v1.19.
    web::Query::<TokenQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().access_token)
        .ok_or(AuthError::MissingToken)
}

impl FromRequest for Authed {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = token_of(req);
        let authenticator = req.app_data::<web::Data<Authenticator>>().cloned();
        Box::pin(async move {
            let authenticator = authenticator.expect("Authenticator is registered as app data");
            let requester = authenticator.authenticate(&token?).await?;
            Ok(Authed(requester))
        })
    }
}
