//! Fetching media from its origin server: `/_matrix/federation/v1/media/download` (a
//! `multipart/mixed` answer whose second part is the file or a `Location` to follow),
//! falling back to the deprecated `/_matrix/media/v3/download` for servers that do not
//! know that endpoint. The file comes back as a stream; nothing is buffered.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LOCATION};
use serde::Deserialize;
use url::Url;

use super::client::{FederationClient, FederationError};
use crate::domain::{MediaId, ServerName, ThumbnailSpec};

#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteMediaError {
    #[error("the remote server does not have this media")]
    NotFound,
    #[error("the remote media has not been uploaded yet")]
    NotYetUploaded,
    #[error("the remote media is larger than allowed")]
    TooLarge,
    #[error(transparent)]
    Federation(#[from] FederationError),
}

/// A remote file as it arrives.
pub struct RemoteFile {
    /// `Content-Type` and the `Content-Disposition` file name, exactly as sent.
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub body: BoxStream<'static, Result<Bytes, std::io::Error>>,
}

impl std::fmt::Debug for RemoteFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteFile")
            .field("content_type", &self.content_type)
            .field("filename", &self.filename)
            .finish_non_exhaustive()
    }
}

/// Space the multipart framing may take besides the file (headers of both parts, the
/// JSON part and the boundaries), when judging a `Content-Length` against the limit.
const FRAMING_ALLOWANCE: u64 = 64 * 1024;
/// The JSON metadata part is read whole, up to this.
const MAX_METADATA_BYTES: usize = 64 * 1024;
/// How long the remote may wait for a pending upload (the spec's default).
const REMOTE_WAIT_MS: u64 = 20_000;

#[derive(Deserialize)]
struct ErrorBody {
    errcode: Option<String>,
}

impl FederationClient {
    /// Fetch `server`'s media `media_id`, refusing anything larger than `limit` bytes
    /// where the headers tell (the caller enforces the limit on the stream itself).
    pub async fn download_media(
        &self,
        server: &ServerName,
        media_id: &MediaId,
        limit: u64,
        timeout: Duration,
    ) -> Result<RemoteFile, RemoteMediaError> {
        let wait = format!("timeout_ms={REMOTE_WAIT_MS}");
        let current = format!("/_matrix/federation/v1/media/download/{media_id}?{wait}");
        let legacy =
            format!("/_matrix/media/v3/download/{server}/{media_id}?allow_remote=false&{wait}");
        self.fetch_file(server, &current, &legacy, limit, timeout)
            .await
    }

    /// Fetch a thumbnail of `server`'s media `media_id` made by `server`, as
    /// [`Self::download_media`] does the media.
    pub async fn download_thumbnail(
        &self,
        server: &ServerName,
        media_id: &MediaId,
        spec: &ThumbnailSpec,
        animated: bool,
        limit: u64,
        timeout: Duration,
    ) -> Result<RemoteFile, RemoteMediaError> {
        let query = format!(
            "width={}&height={}&method={}&animated={animated}&timeout_ms={REMOTE_WAIT_MS}",
            spec.width,
            spec.height,
            spec.method.as_str()
        );
        let current = format!("/_matrix/federation/v1/media/thumbnail/{media_id}?{query}");
        let legacy =
            format!("/_matrix/media/v3/thumbnail/{server}/{media_id}?{query}&allow_remote=false");
        self.fetch_file(server, &current, &legacy, limit, timeout)
            .await
    }

    /// `current` (a federation media endpoint), or `legacy` when the server does not
    /// know it.
    async fn fetch_file(
        &self,
        server: &ServerName,
        current: &str,
        legacy: &str,
        limit: u64,
        timeout: Duration,
    ) -> Result<RemoteFile, RemoteMediaError> {
        let res = self.get(server, current, true, timeout).await?;
        if res.status() == StatusCode::OK {
            return self.multipart_file(server, res, limit, timeout).await;
        }
        let (status, errcode) = status_and_errcode(res).await;
        if !is_unknown_endpoint(status, errcode.as_deref()) {
            return Err(remote_error(server, status, errcode));
        }
        tracing::debug!(%server, "no federation media endpoint; trying the legacy one");
        let res = self.get(server, legacy, true, timeout).await?;
        plain_file(server, res, limit).await
    }

    async fn multipart_file(
        &self,
        server: &ServerName,
        res: reqwest::Response,
        limit: u64,
        timeout: Duration,
    ) -> Result<RemoteFile, RemoteMediaError> {
        let bad = |reason: String| {
            RemoteMediaError::Federation(FederationError::BadResponse {
                server: server.clone(),
                reason,
            })
        };
        check_length(res.headers(), limit.saturating_add(FRAMING_ALLOWANCE))?;
        let content_type = header(res.headers(), CONTENT_TYPE).unwrap_or_default();
        let mime: mime::Mime = content_type
            .parse()
            .map_err(|_| bad(format!("Content-Type {content_type:?}")))?;
        if mime.type_() != mime::MULTIPART || mime.subtype() != "mixed" {
            return Err(bad(format!(
                "Content-Type {content_type:?} is not multipart/mixed"
            )));
        }
        let boundary = mime
            .get_param(mime::BOUNDARY)
            .ok_or_else(|| bad("no multipart boundary".into()))?
            .to_string();
        let mut parts = multer::Multipart::new(res.bytes_stream(), boundary);
        let broken = |e: multer::Error| bad(format!("multipart body: {e}"));

        let mut json = Vec::new();
        {
            // The part must be gone before the next one is asked for.
            let mut metadata = parts
                .next_field()
                .await
                .map_err(broken)?
                .ok_or_else(|| bad("no metadata part".into()))?;
            while let Some(chunk) = metadata.chunk().await.map_err(broken)? {
                json.extend_from_slice(&chunk);
                if json.len() > MAX_METADATA_BYTES {
                    return Err(bad("metadata part too large".into()));
                }
            }
        }
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json)
            .map_err(|e| bad(format!("metadata part: {e}")))?;

        let file = parts
            .next_field()
            .await
            .map_err(broken)?
            .ok_or_else(|| bad("no file part".into()))?;
        if let Some(location) = header(file.headers(), LOCATION) {
            // The rest of this part is to be ignored.
            let url = Url::parse(&location).map_err(|e| bad(format!("Location: {e}")))?;
            tracing::debug!(%server, %url, "following a media Location");
            let res = self.get_location(server, &url, timeout).await?;
            return plain_file(server, res, limit).await;
        }
        let content_type = header(file.headers(), CONTENT_TYPE);
        let filename = filename(file.headers());
        // The field shares the parser's state, so it streams on by itself.
        let body = file
            .map_err(|e| std::io::Error::other(e.to_string()))
            .boxed();
        Ok(RemoteFile {
            content_type,
            filename,
            body,
        })
    }
}

/// A file served as a plain body (the legacy endpoint, or a `Location`).
async fn plain_file(
    server: &ServerName,
    res: reqwest::Response,
    limit: u64,
) -> Result<RemoteFile, RemoteMediaError> {
    if res.status() != StatusCode::OK {
        let (status, errcode) = status_and_errcode(res).await;
        return Err(remote_error(server, status, errcode));
    }
    check_length(res.headers(), limit)?;
    Ok(RemoteFile {
        content_type: header(res.headers(), CONTENT_TYPE),
        filename: filename(res.headers()),
        body: res.bytes_stream().map_err(std::io::Error::other).boxed(),
    })
}

/// Refuse a declared `Content-Length` above `max`.
fn check_length(headers: &HeaderMap, max: u64) -> Result<(), RemoteMediaError> {
    let declared = header(headers, CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > max => Err(RemoteMediaError::TooLarge),
        _ => Ok(()),
    }
}

fn header(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The file name of a `Content-Disposition` header (`filename*` preferred, as RFC 6266
/// says), parsed by actix's RFC 6266 parser.
fn filename(headers: &HeaderMap) -> Option<String> {
    use actix_web::http::header::{ContentDisposition, HeaderValue};
    let raw = HeaderValue::from_bytes(headers.get(CONTENT_DISPOSITION)?.as_bytes()).ok()?;
    let parsed = ContentDisposition::from_raw(&raw).ok()?;
    if let Some(ext) = parsed.get_filename_ext() {
        return String::from_utf8(ext.value.clone()).ok();
    }
    parsed.get_filename().map(str::to_owned)
}

async fn status_and_errcode(res: reqwest::Response) -> (StatusCode, Option<String>) {
    let status = res.status();
    // Error bodies are small; a huge one is not worth reading.
    let body = match res.content_length() {
        Some(len) if len > MAX_METADATA_BYTES as u64 => Bytes::new(),
        _ => res.bytes().await.unwrap_or_default(),
    };
    let errcode = serde_json::from_slice::<ErrorBody>(&body)
        .ok()
        .map(|b| b.errcode.unwrap_or_default());
    (status, errcode)
}

/// Whether an answer means "no such endpoint" (as Synapse judges it): 404 or 405 with
/// `M_UNRECOGNIZED` or with a body that is not JSON, or 400 `M_UNRECOGNIZED`; Complement's
/// mock answers 400 in plain text, which counts too.
fn is_unknown_endpoint(status: StatusCode, errcode: Option<&str>) -> bool {
    matches!(
        (status.as_u16(), errcode),
        (400 | 404 | 405, None | Some("M_UNRECOGNIZED"))
    )
}

fn remote_error(
    server: &ServerName,
    status: StatusCode,
    errcode: Option<String>,
) -> RemoteMediaError {
    match (status.as_u16(), errcode.as_deref()) {
        (404, _) => RemoteMediaError::NotFound,
        (504, Some("M_NOT_YET_UPLOADED")) => RemoteMediaError::NotYetUploaded,
        (_, Some("M_TOO_LARGE")) => RemoteMediaError::TooLarge,
        _ => RemoteMediaError::Federation(FederationError::BadResponse {
            server: server.clone(),
            reason: format!("status {status}, errcode {errcode:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_endpoints_are_recognised_as_synapse_does() {
        let s = |n| StatusCode::from_u16(n).unwrap();
        assert!(is_unknown_endpoint(s(404), Some("M_UNRECOGNIZED")));
        assert!(is_unknown_endpoint(s(405), Some("M_UNRECOGNIZED")));
        assert!(is_unknown_endpoint(s(400), Some("M_UNRECOGNIZED")));
        assert!(is_unknown_endpoint(s(404), None), "non-JSON 404");
        assert!(is_unknown_endpoint(s(405), None));
        assert!(
            is_unknown_endpoint(s(400), None),
            "Complement's plain-text 400"
        );
        assert!(!is_unknown_endpoint(s(404), Some("M_NOT_FOUND")));
        assert!(!is_unknown_endpoint(s(400), Some("M_UNKNOWN")));
        assert!(!is_unknown_endpoint(s(500), None));
        assert!(!is_unknown_endpoint(s(401), Some("M_UNAUTHORIZED")));
    }

    #[test]
    fn file_names_come_from_content_disposition() {
        let map = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_DISPOSITION, v.parse().unwrap());
            h
        };
        assert_eq!(
            filename(&map("inline; filename=a.txt")).as_deref(),
            Some("a.txt")
        );
        assert_eq!(
            filename(&map("attachment; filename=\"a b;c.txt\"")).as_deref(),
            Some("a b;c.txt")
        );
        assert_eq!(
            filename(&map(
                "inline; filename=x.txt; filename*=utf-8''%E2%82%AC%20rates.txt"
            ))
            .as_deref(),
            Some("€ rates.txt")
        );
        assert_eq!(filename(&map("inline")), None);
        assert_eq!(filename(&HeaderMap::new()), None);
    }
}
