//! Access tokens: header and query forms, whoami against the homeserver, caching and
//! homeserver failures.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{Pair, SERVER_NAME, TestApp, assert_error};

const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

async fn missing_and_unknown_tokens(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    Mock::given(method("GET"))
        .and(path(WHOAMI))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"errcode": "M_UNKNOWN_TOKEN", "error": "nope"})),
        )
        .mount(&app.homeserver)
        .await;
    let res = app
        .request(Method::POST, "/_matrix/media/v3/upload")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "M_MISSING_TOKEN").await;
    let res = app
        .request(Method::POST, "/_matrix/media/v3/upload")
        .bearer_auth("bogus")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "M_UNKNOWN_TOKEN").await;
    for path in [
        "/_matrix/client/v1/media/config".to_owned(),
        "/_matrix/media/v3/config".to_owned(),
        format!("/_matrix/client/v1/media/download/{SERVER_NAME}/abc"),
    ] {
        let res = app.get(&path).send().await.unwrap();
        assert_error(res, 401, "M_MISSING_TOKEN").await;
    }
    let res = app
        .request(Method::POST, "/_matrix/media/v1/create")
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "M_MISSING_TOKEN").await;
}

async fn whoami_tokens_are_accepted_and_cached(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    Mock::given(method("GET"))
        .and(path(WHOAMI))
        .and(header("authorization", "Bearer real-token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"user_id": "@carol:test.local", "device_id": "D"})),
        )
        .expect(1)
        .mount(&app.homeserver)
        .await;
    for _ in 0..3 {
        let res = app
            .get("/_matrix/client/v1/media/config")
            .bearer_auth("real-token")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    // The query-string form (deprecated, still required through v1.19) works too.
    let res = app
        .get("/_matrix/client/v1/media/config?access_token=real-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Uploads are attributed to the homeserver's user.
    let res = app
        .request(Method::POST, "/_matrix/media/v1/create")
        .bearer_auth("real-token")
        .send()
        .await
        .unwrap();
    let id = crate::helpers::media_id(&res.json().await.unwrap());
    let res = app
        .authed(
            Method::PUT,
            &format!("/_matrix/media/v3/upload/{SERVER_NAME}/{id}"),
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "M_FORBIDDEN").await;
    // wiremock verifies `expect(1)` when the server drops.
}

async fn homeserver_failures_are_not_401(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    let cases = [
        (ResponseTemplate::new(500), 502, "homeserver error"),
        (
            ResponseTemplate::new(200).set_body_string("not json"),
            502,
            "unusable answer",
        ),
        (
            ResponseTemplate::new(200).set_delay(Duration::from_secs(10)),
            503,
            "homeserver too slow",
        ),
    ];
    for (i, (answer, status, why)) in cases.into_iter().enumerate() {
        app.homeserver.reset().await;
        Mock::given(method("GET"))
            .and(path(WHOAMI))
            .respond_with(answer)
            .mount(&app.homeserver)
            .await;
        // A fresh token each time, so no cached answer is used.
        let res = app
            .get("/_matrix/client/v1/media/config")
            .bearer_auth(format!("t{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{why}");
        assert_error(res, status, "M_UNKNOWN").await;
    }
}

async fn unreachable_homeserver_is_503(pair: Pair) {
    // Port 9 (discard) on loopback: nothing listens, so connections are refused.
    let app = TestApp::spawn_with(pair, |s| s.homeserver.url = "http://127.0.0.1:9".into()).await;
    let res = app
        .get("/_matrix/client/v1/media/config")
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_error(res, 503, "M_UNKNOWN").await;
    // Errors do not leak internal details.
    let res = app
        .get("/_matrix/client/v1/media/config")
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    let body = res.text().await.unwrap();
    assert!(
        !body.contains("127.0.0.1") && !body.contains("refused"),
        "{body}"
    );
}

async fn auth_is_checked_before_the_path(pair: Pair) {
    let app = TestApp::spawn(pair).await;
    for path in [
        "/_matrix/client/v1/media/download/bad..server/x.y".to_owned(),
        "/_matrix/client/v1/media/download/test.local/mxc:%2F%2Fjunk".to_owned(),
        "/_matrix/media/v3/upload/test.local/bad.id".to_owned(),
    ] {
        let method = if path.contains("/upload/") {
            Method::PUT
        } else {
            Method::GET
        };
        let res = app.request(method, &path).send().await.unwrap();
        assert_error(res, 401, "M_MISSING_TOKEN").await;
    }
}

crate::on_both_pairs!(
    missing_and_unknown_tokens,
    whoami_tokens_are_accepted_and_cached,
    homeserver_failures_are_not_401,
    unreachable_homeserver_is_503,
    auth_is_checked_before_the_path,
);
