use reqwest::Method;

use crate::helpers::{ALICE, Pair, SERVER_NAME, TestApp, assert_error, bytes_of, raw_get};

fn authed_path(id: &str) -> String {
    format!("/_matrix/client/v1/media/download/{SERVER_NAME}/{id}")
}

async fn served_files_carry_security_headers(pair: Pair) {
    let app = TestApp::spawn_with(pair, |s| s.media.freeze_unauthenticated = false).await;
    let id = app
        .upload("<script>alert(1)</script>", Some("text/html"), None)
        .await;
    for res in [
        app.download(&id).await,
        app.get(&format!("/_matrix/media/v3/download/{SERVER_NAME}/{id}"))
            .send()
            .await
            .unwrap(),
    ] {
        let h = res.headers();
        assert_eq!(
            h["content-security-policy"],
            "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
             style-src 'unsafe-inline'; object-src 'self';"
        );
        assert_eq!(h["cross-origin-resource-policy"], "cross-origin");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(h["content-disposition"], "attachment");
        assert!(h["cache-control"].to_str().unwrap().contains("immutable"));
    }
}

async fn path_file_name_overrides_the_uploaded_one(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let id = app.upload("x", Some("text/plain"), Some("orig.txt")).await;
    let res = app
        .authed(
            Method::GET,
            &format!("{}/other%20name.txt", authed_path(&id)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-disposition"],
        "inline; filename*=utf-8''other%20name.txt"
    );
    let res = app
        .authed(Method::GET, &format!("{}/plain.txt", authed_path(&id)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["content-disposition"],
        "inline; filename=\"plain.txt\""
    );
}

async fn ranges_are_served_from_storage(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let body = bytes_of(10_000, 5);
    let id = app.upload(body.clone(), Some("video/mp4"), None).await;
    let cases: [(&str, std::ops::Range<usize>); 4] = [
        ("bytes=0-99", 0..100),
        ("bytes=9000-", 9000..10_000),
        ("bytes=-500", 9500..10_000),
        ("bytes=5000-99999", 5000..10_000),
    ];
    for (header, expected) in cases {
        let res = app
            .authed(Method::GET, &authed_path(&id))
            .header("Range", header)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 206, "{header}");
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes {}-{}/10000", expected.start, expected.end - 1).as_str(),
            "{header}"
        );
        assert_eq!(
            res.headers()["content-length"],
            expected.len().to_string().as_str()
        );
        assert_eq!(
            res.bytes().await.unwrap().as_ref(),
            &body[expected],
            "{header}"
        );
    }
    let res = app
        .authed(Method::GET, &authed_path(&id))
        .header("Range", "bytes=10000-")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-range"], "bytes */10000");
    assert_error(res, 416, "M_UNKNOWN").await;
    // A malformed Range header is ignored.
    let res = app
        .authed(Method::GET, &authed_path(&id))
        .header("Range", "lines=1-2")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().len(), 10_000);
}

async fn head_and_conditional_requests(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let id = app
        .upload(bytes_of(4321, 1), Some("image/jpeg"), None)
        .await;

    let res = app
        .authed(Method::HEAD, &authed_path(&id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], "4321");
    assert_eq!(res.headers()["content-type"], "image/jpeg");
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert!(res.bytes().await.unwrap().is_empty());

    let res = app
        .authed(Method::GET, &authed_path(&id))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert_eq!(res.headers()["etag"], etag.as_str());
    let res = app
        .authed(Method::GET, &authed_path(&id))
        .header("If-None-Match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Conditional requests are still authenticated first.
    let res = app
        .get(&authed_path(&id))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "M_MISSING_TOKEN").await;
    // If-Range with a stale validator gets the whole body.
    let res = app
        .authed(Method::GET, &authed_path(&id))
        .header("Range", "bytes=0-9")
        .header("If-Range", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .authed(Method::GET, &authed_path(&id))
        .header("Range", "bytes=0-9")
        .header("If-Range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
}

async fn legacy_download_honours_the_freeze(pair: Pair) {
    // Media uploaded before the freeze stays reachable on the legacy endpoints…
    let app = TestApp::spawn_with(pair, |s| s.media.freeze_unauthenticated = false).await;
    let before = app.upload("old", Some("text/plain"), None).await;
    for version in ["v3", "r0"] {
        let res = app
            .get(&format!(
                "/_matrix/media/{version}/download/{SERVER_NAME}/{before}"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{version}");
        assert_eq!(res.text().await.unwrap(), "old");
    }
    // …and after the operator switches the freeze on (and restarts), new media is not.
    let app = app
        .restart_with(|s| s.media.freeze_unauthenticated = true)
        .await;
    let after = app.upload("new", Some("text/plain"), None).await;
    let res = app
        .get(&format!(
            "/_matrix/media/v3/download/{SERVER_NAME}/{before}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .get(&format!("/_matrix/media/v3/download/{SERVER_NAME}/{after}"))
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "M_NOT_FOUND").await;
    let res = app.download(&after).await;
    assert_eq!(res.text().await.unwrap(), "new");
}

async fn remote_media_is_not_found_for_now(pair: Pair) {
    let app = TestApp::spawn_with(pair, |s| s.media.freeze_unauthenticated = false).await;
    let res = app
        .authed(
            Method::GET,
            "/_matrix/client/v1/media/download/other.example/abcdef",
        )
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "M_NOT_FOUND").await;
    let res = app
        .get("/_matrix/media/v3/download/other.example/abcdef?allow_remote=false")
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "M_NOT_FOUND").await;
    let res = app
        .get("/_matrix/media/v3/download/other.example/abcdef?allow_remote=maybe")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "M_INVALID_PARAM").await;
}

async fn invalid_ids_never_reach_storage(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let cases = [
        ("test.local/abc.def", "dot in media id"),
        ("test.local/..", "dot-dot media id"),
        ("test.local/%2E%2E", "encoded dot-dot"),
        ("test.local/a%2Fb", "encoded slash"),
        ("test.local/..%2F..%2Fetc%2Fpasswd", "encoded traversal"),
        ("test.local/%C3%BC", "unicode media id"),
        ("test.local/a%00b", "NUL"),
        ("bad%20server/abc", "space in server name"),
        ("..%2F/abc", "traversal server name"),
    ];
    for (tail, why) in cases {
        let (status, body) = raw_get(
            &app,
            &format!("/_matrix/client/v1/media/download/{tail}"),
            ALICE,
        )
        .await;
        assert_eq!(status, 400, "{why}: {body}");
        assert!(body.contains("M_INVALID_PARAM"), "{why}: {body}");
    }
    let long = "a".repeat(256);
    let res = app
        .authed(
            Method::GET,
            &format!("/_matrix/client/v1/media/download/test.local/{long}"),
        )
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "M_INVALID_PARAM").await;
    let res = app.download("doesNotExist").await;
    assert_error(res, 404, "M_NOT_FOUND").await;
}

crate::on_both_pairs!(
    served_files_carry_security_headers,
    path_file_name_overrides_the_uploaded_one,
    ranges_are_served_from_storage,
    head_and_conditional_requests,
    legacy_download_honours_the_freeze,
    remote_media_is_not_found_for_now,
    invalid_ids_never_reach_storage,
);
