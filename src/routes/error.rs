//! The one place where errors become Matrix `{errcode, error}` responses.
//! Internal details go to the log, never to the client.

use std::borrow::Cow;
use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::auth::AuthError;
use crate::domain::ParseError;
use crate::federation::{FederationError, KeyRingError, RequestAuthError};
use crate::media::MediaError;
use crate::telemetry::error_chain;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    errcode: &'static str,
    message: Cow<'static, str>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    errcode: &'a str,
    error: &'a str,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        errcode: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            errcode,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", "Media not found")
    }

    pub fn unrecognized() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "M_UNRECOGNIZED",
            "Method not allowed for this endpoint",
        )
    }

    pub fn invalid_param(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", message)
    }

    pub fn missing_param(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_MISSING_PARAM", message)
    }

    pub fn not_json(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", message)
    }

    /// 416, with the `Content-Range: bytes */size` RFC 9110 asks for.
    pub fn range_not_satisfiable(size: u64) -> Self {
        Self {
            headers: vec![(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}"))
                    .expect("digits are a valid header value"),
            )],
            ..Self::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "M_UNKNOWN",
                "Requested range not satisfiable",
            )
        }
    }

    fn internal(error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error_chain(error), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "Internal server error",
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.errcode,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        for (name, value) in &self.headers {
            response.insert_header((name.clone(), value.clone()));
        }
        response.json(ErrorBody {
            errcode: self.errcode,
            error: &self.message,
        })
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        Self::invalid_param(e.0)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::MissingToken => Self::new(
                StatusCode::UNAUTHORIZED,
                "M_MISSING_TOKEN",
                "Missing access token",
            ),
            AuthError::UnknownToken => Self::new(
                StatusCode::UNAUTHORIZED,
                "M_UNKNOWN_TOKEN",
                "Unrecognised access token",
            ),
            AuthError::HomeserverUnavailable(detail) => {
                tracing::error!(%detail, "homeserver unreachable while checking a token");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "M_UNKNOWN",
                    "The homeserver could not be reached to check the access token",
                )
            }
            AuthError::HomeserverBadResponse(detail) => {
                tracing::error!(%detail, "homeserver gave an unusable answer while checking a token");
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "M_UNKNOWN",
                    "The homeserver gave an invalid answer when checking the access token",
                )
            }
        }
    }
}

impl From<MediaError> for ApiError {
    fn from(e: MediaError) -> Self {
        match e {
            MediaError::NotFound => Self::not_found(),
            MediaError::TooLarge { limit } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "M_TOO_LARGE",
                format!("Cannot upload files larger than {limit} bytes"),
            ),
            MediaError::Forbidden(why) => Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", why),
            MediaError::CannotOverwrite => Self::new(
                StatusCode::CONFLICT,
                "M_CANNOT_OVERWRITE_MEDIA",
                "Media ID already has content",
            ),
            MediaError::NotYetUploaded => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "M_NOT_YET_UPLOADED",
                "Media has not been uploaded yet",
            ),
            MediaError::TooManyPending => Self {
                headers: vec![(header::RETRY_AFTER, HeaderValue::from(60u32))],
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "M_LIMIT_EXCEEDED",
                    "Too many pending uploads; upload or let some expire first",
                )
            },
            MediaError::NotThumbnailable => Self::new(
                StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                "Cannot generate thumbnails for the requested content",
            ),
            MediaError::ThumbnailTooLarge => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "M_TOO_LARGE",
                "The content is too large to thumbnail",
            ),
            MediaError::RemoteTooLarge => Self::new(
                StatusCode::BAD_GATEWAY,
                "M_TOO_LARGE",
                "The remote content is too large to serve",
            ),
            MediaError::RemoteUnavailable => Self::new(
                StatusCode::BAD_GATEWAY,
                "M_UNKNOWN",
                "The remote media could not be fetched",
            ),
            MediaError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "M_UNKNOWN",
                    "Internal server error",
                )
            }
            MediaError::BodyRead(e) => {
                tracing::info!(error = %error_chain(e.as_ref()), "request body could not be read");
                Self::new(
                    StatusCode::BAD_REQUEST,
                    "M_UNKNOWN",
                    "The request body could not be read",
                )
            }
            MediaError::Storage(e) => Self::internal(&e),
            MediaError::Repo(e) => Self::internal(&e),
        }
    }
}

impl From<RequestAuthError> for ApiError {
    fn from(e: RequestAuthError) -> Self {
        tracing::info!(error = %e, "refused a federation request");
        let message = match e {
            RequestAuthError::Malformed(_) => "Missing or malformed X-Matrix authorization",
            RequestAuthError::WrongDestination => "The request is for another server",
            RequestAuthError::BadSignature(_) => "Invalid request signature",
        };
        Self::new(StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED", message)
    }
}

impl From<KeyRingError> for ApiError {
    fn from(e: KeyRingError) -> Self {
        tracing::info!(error = %e, "cannot verify a federation request");
        match e {
            KeyRingError::Fetch(FederationError::Denied(_)) => Self::new(
                StatusCode::FORBIDDEN,
                "M_FORBIDDEN",
                "Federation with this server is not allowed",
            ),
            _ => Self::new(
                StatusCode::UNAUTHORIZED,
                "M_UNAUTHORIZED",
                "Cannot verify the signature: the origin's key is unavailable",
            ),
        }
    }
}
