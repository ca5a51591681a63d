//! `multipart/mixed` bodies, as federation media responses are sent: a JSON metadata
//! part (`{}`), then the file with its Content-Type and Content-Disposition, streamed
//! as it is read (never buffered whole), CRLF line endings, then the closing boundary.

use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};

/// One body's boundary.
#[derive(Debug, Clone)]
pub struct MixedBody {
    boundary: String,
}

impl Default for MixedBody {
    fn default() -> Self {
        Self::new()
    }
}

impl MixedBody {
    /// A body with a fresh random boundary (32 hex digits, which never occur in the
    /// headers we write; a file containing the exact delimiter line is as unlikely as
    /// guessing a UUID).
    pub fn new() -> Self {
        Self {
            boundary: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// The response's `Content-Type`.
    pub fn content_type(&self) -> String {
        format!("multipart/mixed; boundary={}", self.boundary)
    }

    /// The whole body around `file`, whose part has `content_type` and
    /// `content_disposition` (header values as they would be sent for a download).
    pub fn media<S, E>(
        &self,
        content_type: &str,
        content_disposition: &str,
        file: S,
    ) -> impl Stream<Item = Result<Bytes, E>> + use<S, E>
    where
        S: Stream<Item = Result<Bytes, E>>,
    {
        let (head, tail) = self.framing(content_type, content_disposition);
        stream::once(async move { Ok(head) })
            .chain(file)
            .chain(stream::once(async move { Ok(tail) }))
    }

    /// The length of the whole body for a file of `file_len` bytes.
    pub fn body_len(&self, content_type: &str, content_disposition: &str, file_len: u64) -> u64 {
        let (head, tail) = self.framing(content_type, content_disposition);
        (head.len() + tail.len()) as u64 + file_len
    }

    /// What comes before and after the file.
    fn framing(&self, content_type: &str, content_disposition: &str) -> (Bytes, Bytes) {
        let b = &self.boundary;
        let head = format!(
            "--{b}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n\
             --{b}\r\nContent-Type: {content_type}\r\nContent-Disposition: {content_disposition}\r\n\r\n"
        );
        (Bytes::from(head), Bytes::from(format!("\r\n--{b}--\r\n")))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::TryStreamExt;
    use ruma_common::api::IncomingResponseExt;
    use ruma_federation_api::authenticated_media::{FileOrLocation, get_content};

    use super::*;

    async fn body(parts: &[&'static [u8]], ct: &str, cd: &str) -> (MixedBody, Vec<u8>) {
        let mixed = MixedBody::new();
        let file = stream::iter(
            parts
                .iter()
                .map(|p| Ok::<_, std::io::Error>(Bytes::from_static(p))),
        );
        let bytes: Vec<Bytes> = mixed.media(ct, cd, file).try_collect().await.unwrap();
        (mixed, bytes.concat())
    }

    /// Parse with ruma's client-side parser (independent of the writer above).
    fn parse(mixed: &MixedBody, body: Vec<u8>) -> get_content::v1::Response {
        let response = http::Response::builder()
            .status(200)
            .header("content-type", mixed.content_type())
            .body(body.as_slice())
            .unwrap();
        get_content::v1::Response::try_from_http_response(response).unwrap()
    }

    #[tokio::test]
    async fn an_independent_parser_reads_back_the_file_and_its_headers() {
        let file: &[&[u8]] = &[b"\x89PNG\r\n--not-the-boundary\r\n", b"", b"\x00\xff tail"];
        let (mixed, bytes) = body(file, "image/png", "inline; filename=\"cat.png\"").await;
        let FileOrLocation::File(content) = parse(&mixed, bytes).content else {
            panic!("expected a file");
        };
        assert_eq!(content.file, file.concat());
        assert_eq!(content.content_type.as_deref(), Some("image/png"));
        let disposition = content.content_disposition.expect("a disposition");
        assert_eq!(disposition.filename.as_deref(), Some("cat.png"));
    }

    #[tokio::test]
    async fn the_layout_is_exactly_the_specs() {
        let (mixed, bytes) = body(&[b"hi"], "text/plain", "attachment").await;
        let b = &mixed.boundary;
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            format!(
                "--{b}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{b}\r\n\
                 Content-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nhi\r\n--{b}--\r\n"
            )
        );
        assert_eq!(
            mixed.content_type(),
            format!("multipart/mixed; boundary={b}")
        );
        assert_ne!(MixedBody::new().boundary, mixed.boundary);
    }

    #[tokio::test]
    async fn an_empty_file_is_still_two_parts() {
        let (mixed, bytes) = body(&[], "application/octet-stream", "attachment").await;
        let FileOrLocation::File(content) = parse(&mixed, bytes).content else {
            panic!("expected a file");
        };
        assert!(content.file.is_empty());
    }
}
