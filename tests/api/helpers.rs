//! Test harness: the real app on port 0, on either storage pair, with a homeserver
//! stand-in (wiremock) answering `whoami`.

use std::sync::Once;
use std::time::Duration;

use futures_util::TryStreamExt;
use mxcd::config::{Config, Secret, Settings, StorageBackend};
use mxcd::media::MediaService;
use mxcd::startup::Application;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use tempfile::TempDir;
use wiremock::MockServer;

pub const SERVER_NAME: &str = "test.local";
pub const ALICE: &str = "alice-token";
pub const ALICE_ID: &str = "@alice:test.local";
pub const BOB: &str = "bob-token";

/// The two supported storage pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pair {
    SqliteFs,
    PostgresS3,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the test suite with ./scripts/test (it starts Postgres and S3)"
        )
    })
}

/// A fresh, empty Postgres database for one test.
pub async fn fresh_postgres_url() -> String {
    use sqlx::Connection;
    let admin = env("MXCD_TEST_POSTGRES_URL");
    let name = format!("mxcd_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to test Postgres");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let base = admin.rsplit_once('/').expect("URL has a database").0;
    format!("{base}/{name}")
}

/// Settings for `pair`, with its own database and storage namespace under `dir`.
pub async fn settings_for(pair: Pair, dir: &TempDir, homeserver: &str) -> Settings {
    let mut s = Settings {
        server_name: SERVER_NAME.into(),
        ..Default::default()
    };
    s.http.bind = "127.0.0.1:0".into();
    s.http.workers = 2;
    s.homeserver.url = homeserver.into();
    s.homeserver.timeout_secs = 2;
    s.auth.static_tokens.insert(ALICE.into(), ALICE_ID.into());
    s.auth
        .static_tokens
        .insert(BOB.into(), "@bob:test.local".into());
    match pair {
        Pair::SqliteFs => {
            s.database.url = Secret(format!("sqlite://{}/mxcd.db", dir.path().display()));
            s.storage.backend = StorageBackend::Filesystem;
            s.storage.path = dir.path().join("media");
        }
        Pair::PostgresS3 => {
            s.database.url = Secret(fresh_postgres_url().await);
            s.database.max_connections = 5;
            s.storage.backend = StorageBackend::S3;
            s.storage.bucket = Some(env("MXCD_TEST_S3_BUCKET"));
            s.storage.endpoint = Some(env("MXCD_TEST_S3_ENDPOINT"));
            s.storage.region =
                std::env::var("MXCD_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into());
            s.storage.access_key_id = Some(env("MXCD_TEST_S3_ACCESS_KEY"));
            s.storage.secret_access_key = Some(Secret(env("MXCD_TEST_S3_SECRET_KEY")));
            s.storage.allow_http = true;
            // One bucket, one namespace per test.
            s.storage.prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        }
    }
    s
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub media: MediaService,
    pub settings: Settings,
    pub homeserver: MockServer,
    pub dir: TempDir,
    handle: actix_web::dev::ServerHandle,
}

impl TestApp {
    pub async fn spawn(pair: Pair) -> Self {
        Self::spawn_with(pair, |_| {}).await
    }

    pub async fn spawn_with(pair: Pair, tweak: impl FnOnce(&mut Settings)) -> Self {
        init_logging();
        let dir = tempfile::tempdir().expect("tempdir");
        let homeserver = MockServer::start().await;
        let mut settings = settings_for(pair, &dir, &homeserver.uri()).await;
        tweak(&mut settings);
        Self::start(settings, homeserver, dir).await
    }

    /// Like [`Self::spawn_with`], serving on `listener` (bound beforehand, so that
    /// instances can be told each other's addresses before they start).
    pub async fn spawn_on(
        pair: Pair,
        listener: std::net::TcpListener,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        init_logging();
        let dir = tempfile::tempdir().expect("tempdir");
        let homeserver = MockServer::start().await;
        let mut settings = settings_for(pair, &dir, &homeserver.uri()).await;
        settings.http.bind = listener.local_addr().unwrap().to_string();
        tweak(&mut settings);
        Self::start_on(settings, homeserver, dir, Some(listener)).await
    }

    async fn start(settings: Settings, homeserver: MockServer, dir: TempDir) -> Self {
        Self::start_on(settings, homeserver, dir, None).await
    }

    async fn start_on(
        settings: Settings,
        homeserver: MockServer,
        dir: TempDir,
        listener: Option<std::net::TcpListener>,
    ) -> Self {
        let config = Config::from_settings(settings.clone()).expect("valid test config");
        let app = match listener {
            Some(listener) => Application::build_on(config, listener).await,
            None => Application::build(config).await,
        }
        .expect("app starts");
        let base = format!("http://{}", app.local_addr());
        let media = app.media().clone();
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            base,
            client,
            media,
            settings,
            homeserver,
            dir,
            handle,
        }
    }

    /// A second instance on the same database and storage (as a second process would be).
    pub async fn spawn_sharing(first: &TestApp) -> Self {
        let homeserver = MockServer::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = first.settings.clone();
        settings.homeserver.url = homeserver.uri();
        settings.http.bind = "127.0.0.1:0".into();
        Self::start(settings, homeserver, dir).await
    }

    /// Stop this instance and start a new one on the same database and storage,
    /// with `tweak` applied to its settings (a restart, or a config change).
    pub async fn restart_with(self, tweak: impl FnOnce(&mut Settings)) -> Self {
        self.handle.stop(true).await;
        let mut settings = self.settings.clone();
        tweak(&mut settings);
        Self::start(settings, self.homeserver, self.dir).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub fn authed(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(ALICE)
    }

    /// Upload `body` as alice; returns the media id.
    pub async fn upload(
        &self,
        body: impl Into<reqwest::Body>,
        content_type: Option<&str>,
        filename: Option<&str>,
    ) -> String {
        let mut req = self.authed(Method::POST, "/_matrix/media/v3/upload");
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        if let Some(name) = filename {
            req = req.query(&[("filename", name)]);
        }
        let res = req.body(body).send().await.unwrap();
        assert_eq!(
            res.status(),
            200,
            "upload failed: {}",
            res.text().await.unwrap()
        );
        media_id(&res.json().await.unwrap())
    }

    /// `POST /create` as `token`; returns the media id and `unused_expires_at`.
    pub async fn create(&self, token: &str) -> (String, i64) {
        let res = self
            .request(Method::POST, "/_matrix/media/v1/create")
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let json: Value = res.json().await.unwrap();
        (
            media_id(&json),
            json["unused_expires_at"]
                .as_i64()
                .expect("numeric unused_expires_at"),
        )
    }

    /// Authenticated download of one of our media ids.
    pub async fn download(&self, media_id: &str) -> Response {
        self.authed(
            Method::GET,
            &format!("/_matrix/client/v1/media/download/{SERVER_NAME}/{media_id}"),
        )
        .send()
        .await
        .unwrap()
    }

    /// Number of content blobs and staging objects in storage.
    pub async fn stored_objects(&self) -> (usize, usize) {
        let blobs = self
            .media
            .blobs()
            .list_blobs()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len();
        let staging = self
            .media
            .blobs()
            .list_staging()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len();
        (blobs, staging)
    }
}

/// The media id of the `content_uri` in an upload or create answer, which must be one
/// of ours.
pub fn media_id(answer: &Value) -> String {
    let uri = answer["content_uri"].as_str().expect("content_uri");
    uri.strip_prefix(&format!("mxc://{SERVER_NAME}/"))
        .unwrap_or_else(|| panic!("not our server name: {uri}"))
        .to_owned()
}

/// Send `GET target` exactly as written (no client-side URL normalisation) and
/// return the status and body.
pub async fn raw_get(app: &TestApp, target: &str, token: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.strip_prefix("http://").unwrap();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Assert a Matrix error response.
pub async fn assert_error(res: Response, status: u16, errcode: &str) {
    let got = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.text().await.unwrap();
    assert_eq!(got, status, "wrong status; body: {body}");
    assert_eq!(
        ct.as_deref(),
        Some("application/json"),
        "error bodies are JSON"
    );
    let json: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert_eq!(json["errcode"], errcode, "body: {body}");
    assert!(json["error"].is_string(), "error message missing: {body}");
}

/// Deterministic pseudo-random bytes.
pub fn bytes_of(len: usize, seed: u8) -> Vec<u8> {
    let mut x = seed as u32 | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            mxcd::telemetry::init();
        }
    });
}

/// Define `#[tokio::test]`s that run an async `fn(Pair)` on both storage pairs.
#[macro_export]
macro_rules! on_both_pairs {
    ($($name:ident),* $(,)?) => {
        mod sqlite_fs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Pair::SqliteFs).await
                }
            )*
        }
        mod postgres_s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Pair::PostgresS3).await
                }
            )*
        }
    };
}
