//! Query-string parsing that reports bad parameters as Matrix errors.

use actix_web::{HttpRequest, web};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Parse the query string (form-encoded: `+` is a space) into `T`.
pub fn parse<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::invalid_param(format!("Invalid query parameter: {}", describe(&e))))
}

fn describe(e: &actix_web::error::QueryPayloadError) -> String {
    match e {
        actix_web::error::QueryPayloadError::Deserialize(inner) => inner.to_string(),
        _ => "malformed query string".to_owned(),
    }
}
