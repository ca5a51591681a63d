//! Unknown paths, wrong methods, CORS preflight and the config endpoints.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{Pair, TestApp, assert_error};

async fn unknown_paths_and_wrong_methods(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    for path in [
        "/_matrix/media/v3/nonsense",
        "/_matrix/client/v1/media/whatever/x",
        "/_matrix/media/v9/upload",
        "/",
    ] {
        let res = app.authed(Method::GET, path).send().await.unwrap();
        assert_error(res, 404, "M_UNRECOGNIZED").await;
    }
    for (method, path) in [
        (Method::PATCH, "/_matrix/media/v3/upload"),
        (Method::GET, "/_matrix/media/v3/upload"),
        (
            Method::DELETE,
            "/_matrix/client/v1/media/download/test.local/abc",
        ),
        (Method::POST, "/_matrix/client/v1/media/config"),
        (Method::GET, "/_matrix/media/v1/create"),
    ] {
        let res = app.authed(method.clone(), path).send().await.unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_error(res, 405, "M_UNRECOGNIZED").await;
    }
}

async fn options_is_answered_without_auth_or_logic(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    for path in [
        "/_matrix/media/v3/upload",
        "/_matrix/client/v1/media/download/test.local/abc",
        "/_matrix/media/v3/nothing",
    ] {
        let res = app
            .request(Method::OPTIONS, path)
            .header("Origin", "https://app.example")
            .header("Access-Control-Request-Method", "POST")
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        let h = res.headers();
        assert_eq!(h["access-control-allow-origin"], "*");
        let methods = h["access-control-allow-methods"].to_str().unwrap();
        for m in ["GET", "POST", "PUT", "OPTIONS"] {
            assert!(methods.contains(m), "{methods}");
        }
        assert!(
            h["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .contains("Authorization")
        );
    }
    // CORS headers are on errors too.
    let res = app
        .get("/_matrix/client/v1/media/config")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
}

async fn config_reports_the_upload_limit(pair: Pair) {
    let app = TestApp::spawn_with(pair, |s| s.media.max_upload_bytes = 12345).await;
    for path in [
        "/_matrix/client/v1/media/config",
        "/_matrix/media/v3/config",
        "/_matrix/media/r0/config",
    ] {
        let res = app.authed(Method::GET, path).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], "application/json");
        let json: Value = res.json().await.unwrap();
        assert_eq!(json["m.upload.size"], 12345, "{path}");
        assert!(json["m.upload.size"].is_u64());
    }
}

crate::on_both_pairs!(
    unknown_paths_and_wrong_methods,
    options_is_answered_without_auth_or_logic,
    config_reports_the_upload_limit,
);
