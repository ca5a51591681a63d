use reqwest::Method;
use serde_json::Value;

use crate::helpers::{Pair, TestApp, assert_error, bytes_of};

async fn upload_then_download_round_trips(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let body = bytes_of(100_000, 7);
    let id = app
        .upload(body.clone(), Some("image/png"), Some("cat.png"))
        .await;

    let res = app.download(&id).await;
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["content-length"], "100000");
    assert_eq!(h["content-disposition"], "inline; filename=\"cat.png\"");
    assert_eq!(res.bytes().await.unwrap().as_ref(), body.as_slice());
}

async fn upload_aliases_are_served(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    for version in ["r0", "v1", "v3"] {
        let res = app
            .authed(Method::POST, &format!("/_matrix/media/{version}/upload"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{version}");
        let json: Value = res.json().await.unwrap();
        assert!(
            json["content_uri"]
                .as_str()
                .unwrap()
                .starts_with("mxc://test.local/")
        );
    }
}

async fn content_type_is_kept_exactly(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let cases = [
        (Some("img/png"), "img/png", "attachment"),
        (
            Some("Text/Plain; charset=utf-8"),
            "Text/Plain; charset=utf-8",
            "inline",
        ),
        (Some("text/html"), "text/html", "attachment"),
        (Some("image/svg+xml"), "image/svg+xml", "attachment"),
        (None, "application/octet-stream", "attachment"),
    ];
    for (sent, expected, disposition) in cases {
        let id = app.upload("data", sent, None).await;
        let res = app.download(&id).await;
        assert_eq!(res.headers()["content-type"], expected, "sent {sent:?}");
        // No filename uploaded → no filename parameter.
        assert_eq!(
            res.headers()["content-disposition"],
            disposition,
            "sent {sent:?}"
        );
    }
}

async fn media_ids_are_long_and_random(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let a = app.upload("same", None, None).await;
    let b = app.upload("same", None, None).await;
    assert_ne!(a, b);
    for id in [&a, &b] {
        assert!(id.len() >= 24, "{id}");
        assert!(
            id.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'),
            "{id}"
        );
    }
}

async fn identical_content_is_stored_once(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let body = bytes_of(50_000, 3);
    let a = app
        .upload(body.clone(), Some("application/pdf"), Some("a.pdf"))
        .await;
    let b = app
        .upload(body.clone(), Some("text/plain"), Some("b.txt"))
        .await;
    app.upload(bytes_of(10, 9), None, None).await;
    assert_eq!(
        app.stored_objects().await,
        (2, 0),
        "two distinct contents, nothing staged"
    );
    // Each media keeps its own metadata.
    assert_eq!(
        app.download(&a).await.headers()["content-type"],
        "application/pdf"
    );
    let res = app.download(&b).await;
    assert_eq!(res.headers()["content-type"], "text/plain");
    assert_eq!(res.bytes().await.unwrap().as_ref(), body.as_slice());
}

async fn too_large_by_content_length_is_rejected(pair: Pair) {
    let app = TestApp::spawn_with(pair, |s| s.media.max_upload_bytes = 1000).await;
    let res = app
        .authed(Method::POST, "/_matrix/media/v3/upload")
        .body(vec![0u8; 1001])
        .send()
        .await
        .unwrap();
    assert_error(res, 413, "M_TOO_LARGE").await;
    // Exactly the limit is fine.
    app.upload(vec![1u8; 1000], None, None).await;
    assert_eq!(app.stored_objects().await, (1, 0));
}

async fn too_large_chunked_body_is_rejected_and_nothing_kept(pair: Pair) {
    let app = TestApp::spawn_with(pair, |s| s.media.max_upload_bytes = 20 * 1024 * 1024).await;
    // No Content-Length: the limit is enforced while streaming, past the first part.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..25).map(|i| Ok(bytes_of(1024 * 1024, i))).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let res = app
        .authed(Method::POST, "/_matrix/media/v3/upload")
        .body(body)
        .send()
        .await;
    match res {
        Ok(res) => assert_error(res, 413, "M_TOO_LARGE").await,
        // The server may close the connection while the client is still sending.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    assert_eq!(
        app.stored_objects().await,
        (0, 0),
        "nothing of the rejected upload stays"
    );
}

async fn filenames_survive_any_characters(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    for name in [
        "War and Peace.pdf",
        "ünïcödé ☃.txt",
        "semi;colon.txt",
        "qu\"ote's.txt",
        "plain.txt",
        "100%.txt",
    ] {
        let id = app.upload("x", Some("text/plain"), Some(name)).await;
        let res = app.download(&id).await;
        let value = res.headers()["content-disposition"].clone();
        let parsed =
            actix_web::http::header::ContentDisposition::from_raw(&actix_value(&value)).unwrap();
        assert!(parsed.is_inline());
        let recovered = match parsed.get_filename_ext() {
            Some(ext) => String::from_utf8(ext.value.clone()).unwrap(),
            None => parsed.get_filename().expect("a filename").to_owned(),
        };
        assert_eq!(recovered, name, "header was {value:?}");
        assert_eq!(
            value.to_str().unwrap().matches("filename").count(),
            1,
            "no duplicate parameters"
        );
    }
}

async fn query_filename_is_form_decoded(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let res = app
        .authed(
            Method::POST,
            "/_matrix/media/v3/upload?filename=my+file%2B1.txt",
        )
        .body("x")
        .send()
        .await
        .unwrap();
    let uri: Value = res.json().await.unwrap();
    let id = crate::helpers::media_id(&uri);
    let res = app.download(&id).await;
    let parsed = actix_web::http::header::ContentDisposition::from_raw(&actix_value(
        &res.headers()["content-disposition"],
    ))
    .unwrap();
    let name = parsed
        .get_filename_ext()
        .map(|e| String::from_utf8(e.value.clone()).unwrap());
    assert_eq!(name.as_deref(), Some("my file+1.txt"));
}

async fn empty_upload_is_served_empty(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let id = app.upload(Vec::<u8>::new(), Some("text/plain"), None).await;
    let res = app.download(&id).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], "0");
    assert!(res.bytes().await.unwrap().is_empty());
}

async fn invalid_content_type_is_rejected(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let res = app
        .authed(Method::POST, "/_matrix/media/v3/upload")
        .header(
            "Content-Type",
            reqwest::header::HeaderValue::from_bytes(b"text/\xffplain").unwrap(),
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "M_INVALID_PARAM").await;
}

crate::on_both_pairs!(
    upload_then_download_round_trips,
    upload_aliases_are_served,
    content_type_is_kept_exactly,
    media_ids_are_long_and_random,
    identical_content_is_stored_once,
    too_large_by_content_length_is_rejected,
    too_large_chunked_body_is_rejected_and_nothing_kept,
    filenames_survive_any_characters,
    query_filename_is_form_decoded,
    empty_upload_is_served_empty,
    invalid_content_type_is_rejected,
);

/// actix's RFC 6266 parser, fed the header exactly as received.
fn actix_value(v: &reqwest::header::HeaderValue) -> actix_web::http::header::HeaderValue {
    actix_web::http::header::HeaderValue::from_bytes(v.as_bytes()).unwrap()
}
