//! MSC2246: `POST /create` then `PUT /upload/{serverName}/{mediaId}`.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{ALICE, BOB, Pair, SERVER_NAME, TestApp, assert_error, bytes_of};

async fn create(app: &TestApp, token: &str) -> (String, i64) {
    app.create(token).await
}

fn put_path(id: &str) -> String {
    format!("/_matrix/media/v3/upload/{SERVER_NAME}/{id}")
}

async fn create_then_put_then_download(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (id, expires) = create(&app, ALICE).await;
    assert!(
        expires > now + 3_600_000,
        "expiry should be hours away, got {}",
        expires - now
    );

    let res = app
        .authed(
            Method::PUT,
            &format!("{}?filename=later.txt", put_path(&id)),
        )
        .header("Content-Type", "text/plain")
        .body("later")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), serde_json::json!({}));

    let res = app.download(&id).await;
    assert_eq!(
        res.headers()["content-disposition"],
        "inline; filename=\"later.txt\""
    );
    assert_eq!(res.text().await.unwrap(), "later");
}

async fn create_accepts_empty_body_and_empty_object(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    for body in ["", "{}"] {
        let res = app
            .authed(Method::POST, "/_matrix/media/v1/create")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "body {body:?}");
    }
    let res = app
        .authed(Method::POST, "/_matrix/media/v1/create")
        .body("[1]")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "M_NOT_JSON").await;
}

async fn put_checks_owner_existence_and_overwrite(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let (id, _) = create(&app, ALICE).await;

    let res = app
        .request(Method::PUT, &put_path(&id))
        .bearer_auth(BOB)
        .body("bob")
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "M_FORBIDDEN").await;
    let res = app
        .authed(Method::PUT, &put_path("neverCreated"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "M_NOT_FOUND").await;
    let res = app
        .authed(
            Method::PUT,
            &format!("/_matrix/media/v3/upload/other.example/{id}"),
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "M_NOT_FOUND").await;
    // Media uploaded directly cannot be PUT to either.
    let direct = app.upload("direct", None, None).await;
    let res = app
        .authed(Method::PUT, &put_path(&direct))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(res, 409, "M_CANNOT_OVERWRITE_MEDIA").await;

    let res = app
        .authed(Method::PUT, &put_path(&id))
        .body("first")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .authed(Method::PUT, &put_path(&id))
        .body("")
        .send()
        .await
        .unwrap();
    assert_error(res, 409, "M_CANNOT_OVERWRITE_MEDIA").await;
    assert_eq!(app.download(&id).await.text().await.unwrap(), "first");
}

/// 409 is decided from the headers: a client announcing a huge body gets its answer
/// without sending a byte of it.
async fn overwrite_is_refused_before_the_body_is_read(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let (id, _) = create(&app, ALICE).await;
    let res = app
        .authed(Method::PUT, &put_path(&id))
        .body("first")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let addr = app.base.strip_prefix("http://").unwrap();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ALICE}\r\nContent-Length: 1000000000\r\n\r\n",
        put_path(&id)
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("answer without waiting for the body")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 409"), "{text}");
    assert!(text.contains("M_CANNOT_OVERWRITE_MEDIA"), "{text}");
}

async fn pending_uploads_are_limited_per_user(pair: Pair) {
    let app = TestApp::spawn_with(pair, |s| s.media.max_pending_uploads = 3).await;
    let mut ids = vec![];
    for _ in 0..3 {
        ids.push(create(&app, ALICE).await.0);
    }
    let res = app
        .authed(Method::POST, "/_matrix/media/v1/create")
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("retry-after"));
    assert_error(res, 429, "M_LIMIT_EXCEEDED").await;
    // Other users have their own allowance.
    create(&app, BOB).await;
    // Uploading one frees a slot.
    let res = app
        .authed(Method::PUT, &put_path(&ids[0]))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    create(&app, ALICE).await;
}

async fn expired_reservations_are_gone(pair: Pair) {
    let app = TestApp::spawn_with(pair, |s| s.media.pending_expiry_secs = 1).await;
    let (id, _) = create(&app, ALICE).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res = app
        .authed(Method::PUT, &put_path(&id))
        .body("late")
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "M_NOT_FOUND").await;
    let res = app.download(&id).await;
    assert_error(res, 404, "M_NOT_FOUND").await;
    // The sweeper deletes the reservation itself.
    let report = app.media.sweep().await.unwrap();
    assert_eq!(report.expired_reservations, 1);
}

/// Create media on `waiter`, start a download of it there that may wait 10 s, PUT
/// `body` through `uploader` 300 ms later, and return what the download got and when.
async fn put_while_download_waits(
    waiter: &TestApp,
    uploader: &TestApp,
    body: &'static str,
) -> (String, Duration) {
    let (id, _) = create(waiter, ALICE).await;
    let started = Instant::now();
    let waiting = {
        let path = format!("/_matrix/client/v1/media/download/{SERVER_NAME}/{id}?timeout_ms=10000");
        let req = waiter.authed(Method::GET, &path);
        tokio::spawn(async move { req.send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = uploader
        .authed(Method::PUT, &put_path(&id))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = waiting.await.unwrap();
    assert_eq!(res.status(), 200);
    (res.text().await.unwrap(), started.elapsed())
}

async fn download_waits_for_the_upload(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let (got, took) = put_while_download_waits(&app, &app, "arrived").await;
    assert_eq!(got, "arrived");
    assert!(
        took < Duration::from_secs(5),
        "download completed as soon as the PUT landed"
    );
}

/// The PUT lands on another process sharing the database and storage; the waiting
/// download (on the first process) still completes.
async fn download_waits_across_processes(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let other = TestApp::spawn_sharing(&app).await;
    let (got, took) = put_while_download_waits(&app, &other, "elsewhere").await;
    assert_eq!(got, "elsewhere");
    assert!(
        took < Duration::from_secs(5),
        "seen by polling the shared database"
    );
}

async fn download_times_out_with_504(pair: Pair) {
    let app = TestApp::spawn_with(pair, |s| s.media.freeze_unauthenticated = false).await;
    let (id, _) = create(&app, ALICE).await;
    let started = Instant::now();
    let res = app
        .authed(
            Method::GET,
            &format!("/_matrix/client/v1/media/download/{SERVER_NAME}/{id}?timeout_ms=400"),
        )
        .send()
        .await
        .unwrap();
    assert_error(res, 504, "M_NOT_YET_UPLOADED").await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let res = app
        .get(&format!(
            "/_matrix/media/v3/download/{SERVER_NAME}/{id}?timeout_ms=0"
        ))
        .send()
        .await
        .unwrap();
    assert_error(res, 504, "M_NOT_YET_UPLOADED").await;
}

async fn upload_size_limit_applies_to_put(pair: Pair) {
    let app = TestApp::spawn_with(pair, |s| s.media.max_upload_bytes = 100).await;
    let (id, _) = create(&app, ALICE).await;
    let res = app
        .authed(Method::PUT, &put_path(&id))
        .body(bytes_of(101, 1))
        .send()
        .await
        .unwrap();
    assert_error(res, 413, "M_TOO_LARGE").await;
    // The reservation is still usable.
    let res = app
        .authed(Method::PUT, &put_path(&id))
        .body(bytes_of(100, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

crate::on_both_pairs!(
    create_then_put_then_download,
    create_accepts_empty_body_and_empty_object,
    put_checks_owner_existence_and_overwrite,
    overwrite_is_refused_before_the_body_is_read,
    pending_uploads_are_limited_per_user,
    expired_reservations_are_gone,
    download_waits_for_the_upload,
    download_waits_across_processes,
    download_times_out_with_504,
    upload_size_limit_applies_to_put,
);
