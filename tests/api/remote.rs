//! Two mxcd instances acting as two homeservers (`hs-a.test`, `hs-b.test`) with their
//! own keys, each serving its key and reaching the other through `federation.overrides`:
//! inbound X-Matrix checks, `multipart/mixed` answers, fetching and caching remote media,
//! and the limits. Stubs (wiremock) stand in only for broken or legacy-only servers.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use image::GenericImageView;
use mxcd::config::Settings;
use mxcd::domain::{MediaId, Mxc, ServerName};
use mxcd::federation::{ServerKey, authorization};
use mxcd::media::Access;
use reqwest::{Method, Response};
use ruma_common::api::IncomingResponseExt;
use ruma_federation_api::authenticated_media::{FileOrLocation, get_content};
use serde_json::Value;
use tempfile::TempDir;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{Pair, TestApp, assert_error, bytes_of, wait_until};

const HS_A: &str = "hs-a.test";
const HS_B: &str = "hs-b.test";

/// A homeserver: its instance and the key it signs with.
struct Homeserver {
    app: TestApp,
    key: ServerKey,
    _keys: TempDir,
}

impl Homeserver {
    /// Upload as alice; returns the media id.
    async fn upload(&self, body: Vec<u8>, content_type: &str, filename: Option<&str>) -> String {
        let mut req = self
            .app
            .authed(Method::POST, "/_matrix/media/v3/upload")
            .header("Content-Type", content_type);
        if let Some(name) = filename {
            req = req.query(&[("filename", name)]);
        }
        let res = req.body(body).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let json: Value = res.json().await.unwrap();
        let uri = json["content_uri"].as_str().unwrap();
        let prefix = format!("mxc://{}/", self.app.settings.server_name);
        uri.strip_prefix(&prefix).unwrap().to_owned()
    }

    /// Authenticated client download of `server/media_id`.
    async fn client_download(&self, server: &str, media_id: &str) -> Response {
        self.app
            .authed(
                Method::GET,
                &format!("/_matrix/client/v1/media/download/{server}/{media_id}"),
            )
            .send()
            .await
            .unwrap()
    }

    /// A federation `GET path` to this server, signed by `origin` with `key` for
    /// `destination`.
    async fn federation_get(
        &self,
        key: &ServerKey,
        origin: &str,
        destination: &str,
        path: &str,
    ) -> Response {
        let header = authorization(
            key,
            &ServerName::parse(origin).unwrap(),
            &ServerName::parse(destination).unwrap(),
            "GET",
            path,
        );
        self.app
            .get(path)
            .header("Authorization", header)
            .send()
            .await
            .unwrap()
    }
}

fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

fn url_of(l: &TcpListener) -> String {
    format!("http://{}", l.local_addr().unwrap())
}

async fn homeserver(
    pair: Pair,
    name: &str,
    listener: TcpListener,
    overrides: &[(&str, String)],
    tweak: impl FnOnce(&mut Settings),
) -> Homeserver {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("signing.key");
    let key = ServerKey::generate();
    std::fs::write(&key_file, key.to_synapse_format()).unwrap();
    let app = TestApp::spawn_on(pair, listener, |s| {
        s.server_name = name.into();
        s.federation.signing_key_path = key_file.to_string_lossy().into_owned();
        s.federation.serve_keys = true;
        s.federation.backoff_initial_secs = 60;
        // Everything here is on loopback, which the default blocklist refuses.
        s.federation.ip_blocklist.clear();
        for (server, url) in overrides {
            s.federation
                .overrides
                .insert(server.to_string(), url.clone());
        }
        tweak(s);
    })
    .await;
    Homeserver {
        app,
        key,
        _keys: keys,
    }
}

/// hs-a and hs-b, knowing each other; `tweak_b` adjusts hs-b's settings.
async fn two_homeservers(
    pair: Pair,
    tweak_a: impl FnOnce(&mut Settings),
    tweak_b: impl FnOnce(&mut Settings),
) -> (Homeserver, Homeserver) {
    let (la, lb) = (listener(), listener());
    let (ua, ub) = (url_of(&la), url_of(&lb));
    let a = homeserver(pair, HS_A, la, &[(HS_B, ub)], tweak_a).await;
    let b = homeserver(pair, HS_B, lb, &[(HS_A, ua)], tweak_b).await;
    (a, b)
}

fn content_disposition_filename(res: &Response) -> Option<String> {
    let raw = res.headers().get("content-disposition")?;
    let value = actix_web::http::header::HeaderValue::from_bytes(raw.as_bytes()).unwrap();
    let cd = actix_web::http::header::ContentDisposition::from_raw(&value).unwrap();
    cd.get_filename_ext()
        .map(|e| String::from_utf8(e.value.clone()).unwrap())
        .or_else(|| cd.get_filename().map(str::to_owned))
}

/// Parse a federation media answer with ruma's client-side parser.
async fn parse_multipart(res: Response) -> get_content::v1::Response {
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("multipart/mixed; boundary="), "{ct}");
    let body = res.bytes().await.unwrap();
    let response = http::Response::builder()
        .status(200)
        .header("content-type", ct)
        .body(body.as_ref())
        .unwrap();
    get_content::v1::Response::try_from_http_response(response).expect("valid multipart/mixed")
}

async fn remote_media_is_fetched_and_served_byte_exact(pair: Pair) {
    let (a, b) = two_homeservers(pair, |_| {}, |_| {}).await;
    let body = bytes_of(70_000, 3);
    let name = "report € 2026;final.txt";
    let id = a.upload(body.clone(), "img/png", Some(name)).await;

    let res = b.client_download(HS_A, &id).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "img/png",
        "type kept verbatim"
    );
    assert_eq!(content_disposition_filename(&res).as_deref(), Some(name));
    assert_eq!(res.bytes().await.unwrap(), body);
    assert_eq!(b.app.media.remote_fetches(), 1);

    // Cached: served again without asking hs-a.
    let res = b.client_download(HS_A, &id).await;
    assert_eq!(res.bytes().await.unwrap(), body);
    assert_eq!(b.app.media.remote_fetches(), 1);

    // Unknown remote media is a 404, and asking again soon does not ask hs-a again.
    let res = b.client_download(HS_A, "doesNotExist").await;
    assert_error(res, 404, "M_NOT_FOUND").await;
    let res = b.client_download(HS_A, "doesNotExist").await;
    assert_error(res, 404, "M_NOT_FOUND").await;
    assert_eq!(b.app.media.remote_fetches(), 2);

    // allow_remote=false never fetches (and the legacy freeze hides new remote media).
    let other = a.upload(b"x".to_vec(), "text/plain", None).await;
    let res = b
        .app
        .get(&format!(
            "/_matrix/media/v3/download/{HS_A}/{other}?allow_remote=false"
        ))
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "M_NOT_FOUND").await;
    assert_eq!(b.app.media.remote_fetches(), 2);
}

fn png(w: u32, h: u32) -> Vec<u8> {
    crate::thumbnail::encoded(crate::thumbnail::photo(w, h), image::ImageFormat::Png)
}

async fn remote_thumbnails_come_from_the_origin(pair: Pair) {
    let (a, b) = two_homeservers(pair, |_| {}, |_| {}).await;
    let id = a.upload(png(120, 80), "image/png", Some("land.png")).await;
    let path = |query: &str| format!("/_matrix/client/v1/media/thumbnail/{HS_A}/{id}?{query}");
    let get = |app: &TestApp, query: &str| app.authed(Method::GET, &path(query)).send();

    let crop = "width=32&height=32&method=crop";
    let res = get(&b.app, crop).await.unwrap();
    assert_eq!(res.status(), 200);
    let via_b_type = res.headers()["content-type"].clone();
    assert_eq!(via_b_type, "image/png", "a PNG's thumbnail is a PNG");
    let via_b = res.bytes().await.unwrap();
    let res = get(&a.app, crop).await.unwrap();
    assert_eq!(res.headers()["content-type"], via_b_type);
    assert_eq!(res.bytes().await.unwrap(), via_b, "the origin's thumbnail");
    assert_eq!(
        image::load_from_memory(&via_b).unwrap().dimensions(),
        (32, 32)
    );
    assert_eq!(b.app.media.remote_fetches(), 1, "the thumbnail only");

    // Asked again: served from the cache.
    let res = get(&b.app, crop).await.unwrap();
    assert_eq!(res.bytes().await.unwrap(), via_b);
    assert_eq!(b.app.media.remote_fetches(), 1);

    // Once the original is cached, other sizes are made here from it.
    assert_eq!(b.client_download(HS_A, &id).await.status(), 200);
    assert_eq!(b.app.media.remote_fetches(), 2);
    let scale = "width=64&height=64&method=scale";
    let res = get(&b.app, scale).await.unwrap();
    assert_eq!(res.status(), 200);
    let made_here = res.bytes().await.unwrap();
    let res = get(&a.app, scale).await.unwrap();
    assert_eq!(res.bytes().await.unwrap(), made_here, "the same pipeline");
    assert_eq!(b.app.media.remote_fetches(), 2);
}

async fn without_an_origin_thumbnail_one_is_made_here(pair: Pair) {
    let stub = MockServer::start().await;
    Mock::given(path("/_matrix/federation/v1/media/thumbnail/pic"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "errcode": "M_UNKNOWN", "error": "Cannot generate thumbnails"
        })))
        .expect(1)
        .mount(&stub)
        .await;
    let boundary = "0f1e2d3c";
    let mut body = format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&png(100, 100));
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Mock::given(path("/_matrix/federation/v1/media/download/pic"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(body, &format!("multipart/mixed; boundary={boundary}")),
        )
        .expect(1)
        .mount(&stub)
        .await;
    let b = homeserver(pair, HS_B, listener(), &[("pics.test", stub.uri())], |_| {}).await;
    let res = b
        .app
        .authed(
            Method::GET,
            "/_matrix/client/v1/media/thumbnail/pics.test/pic?width=50&height=50&method=crop",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (w, h) = image::load_from_memory(&res.bytes().await.unwrap())
        .unwrap()
        .dimensions();
    assert!(
        w == h && w >= 50,
        "a square crop, not below the box: {w}x{h}"
    );
}

async fn our_media_is_served_over_federation_as_multipart(pair: Pair) {
    let (a, b) = two_homeservers(pair, |_| {}, |_| {}).await;
    let body = bytes_of(5_000, 9);
    let id = b.upload(body.clone(), "img/png", Some("a b.png")).await;
    let path = format!("/_matrix/federation/v1/media/download/{id}");
    let res = b.federation_get(&a.key, HS_A, HS_B, &path).await;
    assert!(res.headers().get("location").is_none());
    let parsed = parse_multipart(res).await;
    let FileOrLocation::File(file) = parsed.content else {
        panic!("expected the file itself");
    };
    assert_eq!(file.file, body);
    assert_eq!(file.content_type.as_deref(), Some("img/png"));
    assert_eq!(
        file.content_disposition.and_then(|d| d.filename).as_deref(),
        Some("a b.png")
    );

    // Thumbnails: the same bytes as the client API gives.
    let img = b.upload(png(120, 80), "image/png", None).await;
    let query = "width=96&height=96&method=crop";
    let path = format!("/_matrix/federation/v1/media/thumbnail/{img}?{query}");
    let parsed = parse_multipart(b.federation_get(&a.key, HS_A, HS_B, &path).await).await;
    let FileOrLocation::File(thumb) = parsed.content else {
        panic!("expected the file itself");
    };
    let client = b
        .app
        .authed(
            Method::GET,
            &format!("/_matrix/client/v1/media/thumbnail/{HS_B}/{img}?{query}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        thumb.content_type.as_deref(),
        client.headers()["content-type"].to_str().ok()
    );
    assert_eq!(client.bytes().await.unwrap(), thumb.file);

    // Only our own media: hs-a's media (even when cached here) is not served.
    let theirs = a.upload(b"theirs".to_vec(), "text/plain", None).await;
    assert_eq!(b.client_download(HS_A, &theirs).await.status(), 200);
    let path = format!("/_matrix/federation/v1/media/download/{theirs}");
    let res = b.federation_get(&a.key, HS_A, HS_B, &path).await;
    assert_error(res, 404, "M_NOT_FOUND").await;
}

async fn bad_federation_signatures_are_refused(pair: Pair) {
    let dead = listener();
    let dead_url = url_of(&dead);
    drop(dead);
    let (a, b) = two_homeservers(
        pair,
        |_| {},
        |s| {
            s.federation.overrides.insert("hs-c.test".into(), dead_url);
        },
    )
    .await;
    let id = b.upload(b"secret".to_vec(), "text/plain", None).await;
    let path = format!("/_matrix/federation/v1/media/download/{id}");

    let res = b.app.get(&path).send().await.unwrap();
    assert_error(res, 401, "M_UNAUTHORIZED").await;
    let res = b
        .app
        .get(&path)
        .header("Authorization", "X-Matrix origin=hs-a.test")
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "M_UNAUTHORIZED").await;
    // Signed for another destination.
    let res = b.federation_get(&a.key, HS_A, "hs-c.test", &path).await;
    assert_error(res, 401, "M_UNAUTHORIZED").await;
    // Signed by a key hs-a does not publish.
    let impostor = ServerKey::generate();
    let res = b.federation_get(&impostor, HS_A, HS_B, &path).await;
    assert_error(res, 401, "M_UNAUTHORIZED").await;
    // Signed over another URI.
    let header = authorization(
        &a.key,
        &ServerName::parse(HS_A).unwrap(),
        &ServerName::parse(HS_B).unwrap(),
        "GET",
        &format!("{path}?timeout_ms=1"),
    );
    let res = b
        .app
        .get(&path)
        .header("Authorization", header)
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "M_UNAUTHORIZED").await;
    // A server whose keys cannot be fetched.
    let res = b.federation_get(&a.key, "hs-c.test", HS_B, &path).await;
    assert_error(res, 401, "M_UNAUTHORIZED").await;
    // The real thing works.
    let res = b.federation_get(&a.key, HS_A, HS_B, &path).await;
    assert_eq!(res.status(), 200);
}

async fn expired_origin_keys_are_refused(pair: Pair) {
    // hs-a publishes keys that are already expired when hs-b sees them.
    let (a, b) = two_homeservers(pair, |s| s.federation.key_validity_secs = 0, |_| {}).await;
    let id = b.upload(b"secret".to_vec(), "text/plain", None).await;
    let path = format!("/_matrix/federation/v1/media/download/{id}");
    let res = b.federation_get(&a.key, HS_A, HS_B, &path).await;
    assert_error(res, 401, "M_UNAUTHORIZED").await;
}

async fn denied_servers_are_refused_both_ways(pair: Pair) {
    let (a, b) = two_homeservers(pair, |_| {}, |s| s.federation.deny = vec!["*.test".into()]).await;
    let ours = b.upload(b"ours".to_vec(), "text/plain", None).await;
    let path = format!("/_matrix/federation/v1/media/download/{ours}");
    let res = b.federation_get(&a.key, HS_A, HS_B, &path).await;
    assert_error(res, 403, "M_FORBIDDEN").await;
    let theirs = a.upload(b"theirs".to_vec(), "text/plain", None).await;
    let res = b.client_download(HS_A, &theirs).await;
    assert_error(res, 403, "M_FORBIDDEN").await;
}

async fn remote_media_over_the_limit_is_refused_and_not_kept(pair: Pair) {
    let (a, b) = two_homeservers(pair, |_| {}, |s| s.federation.max_remote_bytes = 10_000).await;
    let big = a
        .upload(bytes_of(10_001, 1), "application/x-big", None)
        .await;
    let res = b.client_download(HS_A, &big).await;
    assert_error(res, 502, "M_TOO_LARGE").await;
    assert_eq!(b.app.stored_objects().await, (0, 0), "nothing kept");
    // Exactly at the limit is fine.
    let fits = a
        .upload(bytes_of(10_000, 1), "application/x-big", None)
        .await;
    let res = b.client_download(HS_A, &fits).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().len(), 10_000);
}

async fn a_declared_length_over_the_limit_is_refused(pair: Pair) {
    // A legacy-only stub declares the file's length up front.
    let stub = MockServer::start().await;
    Mock::given(path("/_matrix/federation/v1/media/download/big"))
        .respond_with(ResponseTemplate::new(404).set_body_string("Not found"))
        .mount(&stub)
        .await;
    Mock::given(path("/_matrix/media/v3/download/stub.test/big"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Content-Type", "application/octet-stream")
                .set_body_bytes(bytes_of(3_000, 1)),
        )
        .mount(&stub)
        .await;
    let b = homeserver(pair, HS_B, listener(), &[("stub.test", stub.uri())], |s| {
        s.federation.max_remote_bytes = 2_000
    })
    .await;
    let res = b.client_download("stub.test", "big").await;
    assert_error(res, 502, "M_TOO_LARGE").await;
    assert_eq!(b.app.stored_objects().await, (0, 0), "nothing kept");
}

async fn a_legacy_only_server_is_fetched_through_the_old_endpoint(pair: Pair) {
    let stub = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/_matrix/federation/v1/media/download/abc"))
        .respond_with(ResponseTemplate::new(404).set_body_json(serde_json::json!({
            "errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"
        })))
        .expect(1)
        .mount(&stub)
        .await;
    Mock::given(method("GET"))
        .and(path("/_matrix/media/v3/download/legacy.test/abc"))
        .and(query_param("allow_remote", "false"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Content-Type", "text/plain; charset=utf-8")
                .insert_header("Content-Disposition", "inline; filename=\"old school.txt\"")
                .set_body_bytes(b"from the old endpoint".to_vec()),
        )
        .expect(1)
        .mount(&stub)
        .await;
    let b = homeserver(
        pair,
        HS_B,
        listener(),
        &[("legacy.test", stub.uri())],
        |_| {},
    )
    .await;
    let res = b.client_download("legacy.test", "abc").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(
        content_disposition_filename(&res).as_deref(),
        Some("old school.txt")
    );
    assert_eq!(res.bytes().await.unwrap(), &b"from the old endpoint"[..]);
    // The stub's expectations (one call each) are checked when it is dropped.
}

async fn a_location_part_is_followed(pair: Pair) {
    let stub = MockServer::start().await;
    let boundary = "6b8ce2d0c1a94d2e";
    let body = format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n\
         Location: {}/cdn/file\r\n\r\n\r\n--{boundary}--\r\n",
        stub.uri()
    );
    Mock::given(path("/_matrix/federation/v1/media/download/loc"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            body.into_bytes(),
            &format!("multipart/mixed; boundary={boundary}"),
        ))
        .mount(&stub)
        .await;
    Mock::given(path("/cdn/file"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Content-Type", "image/gif")
                .insert_header("Content-Disposition", "attachment; filename=cdn.gif")
                .set_body_bytes(b"GIF89a-ish".to_vec()),
        )
        .expect(1)
        .mount(&stub)
        .await;
    let b = homeserver(pair, HS_B, listener(), &[("cdn.test", stub.uri())], |_| {}).await;
    let res = b.client_download("cdn.test", "loc").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/gif");
    assert_eq!(
        content_disposition_filename(&res).as_deref(),
        Some("cdn.gif")
    );
    assert_eq!(res.bytes().await.unwrap(), &b"GIF89a-ish"[..]);
}

async fn a_location_into_the_blocklist_is_not_followed(pair: Pair) {
    let stub = MockServer::start().await;
    let boundary = "a1b2c3";
    let body = format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n\
         Location: {}/internal/secret\r\n\r\n\r\n--{boundary}--\r\n",
        stub.uri()
    );
    Mock::given(path("/_matrix/federation/v1/media/download/loc"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            body.into_bytes(),
            &format!("multipart/mixed; boundary={boundary}"),
        ))
        .expect(1)
        .mount(&stub)
        .await;
    Mock::given(path("/internal/secret"))
        .respond_with(ResponseTemplate::new(200).set_body_string("internal"))
        .expect(0)
        .mount(&stub)
        .await;
    // The default blocklist; the override itself is the operator's and exempt.
    let b = homeserver(pair, HS_B, listener(), &[("evil.test", stub.uri())], |s| {
        s.federation.ip_blocklist = mxcd::federation::DEFAULT_BLOCKLIST
            .iter()
            .map(|r| r.to_string())
            .collect();
    })
    .await;
    let res = b.client_download("evil.test", "loc").await;
    assert_error(res, 502, "M_UNKNOWN").await;
}

async fn a_failing_server_is_backed_off(pair: Pair) {
    let stub = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&stub)
        .await;
    let dead = listener();
    let dead_url = url_of(&dead);
    drop(dead);
    let b = homeserver(
        pair,
        HS_B,
        listener(),
        &[("sick.test", stub.uri()), ("dead.test", dead_url)],
        |_| {},
    )
    .await;
    for id in ["one", "two", "three"] {
        let res = b.client_download("sick.test", id).await;
        assert_error(res, 502, "M_UNKNOWN").await;
    }
    let asked = stub.received_requests().await.unwrap().len();
    assert_eq!(asked, 1, "after one failure the server is left alone");

    let started = Instant::now();
    for id in ["one", "two"] {
        let res = b.client_download("dead.test", id).await;
        assert_error(res, 502, "M_UNKNOWN").await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a dead server fails fast"
    );
}

async fn twenty_concurrent_first_requests_fetch_once(pair: Pair) {
    let (a, b) = two_homeservers(pair, |_| {}, |_| {}).await;
    let body = bytes_of(300_000, 5);
    let id = a
        .upload(body.clone(), "application/octet-stream", None)
        .await;
    let b = std::sync::Arc::new(b);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (b, id) = (b.clone(), id.clone());
            tokio::spawn(async move {
                let res = b.client_download(HS_A, &id).await;
                assert_eq!(res.status(), 200);
                res.bytes().await.unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), body);
    }
    assert_eq!(b.app.media.remote_fetches(), 1);
}

async fn processes_sharing_a_database_fetch_once(pair: Pair) {
    let (a, b) = two_homeservers(pair, |_| {}, |_| {}).await;
    let b2 = TestApp::spawn_sharing(&b.app).await;
    let body = bytes_of(200_000, 6);
    let id = a
        .upload(body.clone(), "application/octet-stream", None)
        .await;
    let path = format!("/_matrix/client/v1/media/download/{HS_A}/{id}");
    let requests: Vec<_> = (0..10)
        .map(|i| {
            let app = if i % 2 == 0 { &b.app } else { &b2 };
            app.authed(Method::GET, &path).send()
        })
        .collect();
    for res in futures_util::future::join_all(requests).await {
        let res = res.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.bytes().await.unwrap(), body);
    }
    assert_eq!(b.app.media.remote_fetches() + b2.media.remote_fetches(), 1);
}

async fn the_remote_cache_keeps_within_its_budget(pair: Pair) {
    let (a, b) = two_homeservers(pair, |_| {}, |s| s.federation.remote_cache_bytes = 25_000).await;
    let mut ids = Vec::new();
    for seed in 0..3 {
        let id = a
            .upload(bytes_of(10_000, seed), "application/x-test", None)
            .await;
        assert_eq!(b.client_download(HS_A, &id).await.status(), 200);
        ids.push(id);
        // Distinct access times, so the order of eviction is defined.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cached = |id: &str| {
        let mxc = Mxc::new(
            ServerName::parse(HS_A).unwrap(),
            MediaId::parse(id).unwrap(),
        );
        let media = b.app.media.clone();
        async move {
            media
                .fetch(&mxc, Access::Federation, Duration::ZERO)
                .await
                .is_ok()
        }
    };
    wait_until("the oldest remote media is evicted", || {
        let check = cached(&ids[0]);
        async move { !check.await }
    })
    .await;
    assert!(cached(&ids[1]).await && cached(&ids[2]).await);
    // Evicted media is fetched again on demand.
    assert_eq!(b.client_download(HS_A, &ids[0]).await.status(), 200);
    assert_eq!(b.app.media.remote_fetches(), 4);
}

async fn thumbnails_fetched_from_the_origin_count_toward_the_budget(pair: Pair) {
    // Images smaller than the request: the origin's thumbnail is the image itself, so
    // the size of what is cached is known here.
    let images: Vec<Vec<u8>> = (20..23).map(|w| png(w, 20)).collect();
    let budget = (images[1].len() + images[2].len()) as u64;
    let (a, b) = two_homeservers(pair, |_| {}, |s| s.federation.remote_cache_bytes = budget).await;
    let thumbnail = |id: &str| {
        let path = format!(
            "/_matrix/client/v1/media/thumbnail/{HS_A}/{id}?width=32&height=32&method=crop"
        );
        b.app.authed(Method::GET, &path).send()
    };
    let mut ids = Vec::new();
    for image in &images {
        let id = a.upload(image.clone(), "image/png", None).await;
        let res = thumbnail(&id).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.bytes().await.unwrap(), image[..]);
        ids.push(id);
        // Distinct access times, so the order of eviction is defined.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(b.app.media.remote_fetches(), 3, "thumbnails only");
    wait_until("the oldest remote thumbnail is evicted", || {
        let media = b.app.media.clone();
        async move { media.remote_cache_bytes().await.unwrap() <= budget }
    })
    .await;
    assert_eq!(b.app.media.remote_cache_bytes().await.unwrap(), budget);
    for id in &ids[1..] {
        assert_eq!(thumbnail(id).await.unwrap().status(), 200);
    }
    assert_eq!(
        b.app.media.remote_fetches(),
        3,
        "the newer two are still cached"
    );
    assert_eq!(thumbnail(&ids[0]).await.unwrap().status(), 200);
    assert_eq!(
        b.app.media.remote_fetches(),
        4,
        "the oldest is fetched again"
    );
}

crate::on_both_pairs!(
    remote_media_is_fetched_and_served_byte_exact,
    remote_thumbnails_come_from_the_origin,
    without_an_origin_thumbnail_one_is_made_here,
    our_media_is_served_over_federation_as_multipart,
    bad_federation_signatures_are_refused,
    expired_origin_keys_are_refused,
    denied_servers_are_refused_both_ways,
    remote_media_over_the_limit_is_refused_and_not_kept,
    a_declared_length_over_the_limit_is_refused,
    a_legacy_only_server_is_fetched_through_the_old_endpoint,
    a_location_part_is_followed,
    a_location_into_the_blocklist_is_not_followed,
    a_failing_server_is_backed_off,
    twenty_concurrent_first_requests_fetch_once,
    processes_sharing_a_database_fetch_once,
    the_remote_cache_keeps_within_its_budget,
    thumbnails_fetched_from_the_origin_count_toward_the_budget,
);
