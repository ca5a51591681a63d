//! Configuration: built-in defaults, then an optional TOML file, then environment
//! variables `MXCD__SECTION__KEY`. Every key is documented in `config/mxcd.example.toml`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::domain::{ServerName, ThumbnailSpec, UserId};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The server name in the `mxc://` URIs this repository owns.
    pub server_name: String,
    pub http: HttpSettings,
    pub homeserver: HomeserverSettings,
    pub auth: AuthSettings,
    pub database: DatabaseSettings,
    pub storage: StorageSettings,
    pub media: MediaSettings,
    pub thumbnails: ThumbnailSettings,
    pub federation: FederationSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationSettings {
    /// The homeserver's signing key, in Synapse's signing-key file format (point this at
    /// the homeserver's own key file); created if the file does not exist. Empty: none.
    pub signing_key_path: String,
    /// Answer `/_matrix/key/v2/server` with that key (for tests and deployments where
    /// mxcd is the only server under this name); normally the homeserver does.
    pub serve_keys: bool,
    /// How long others may cache the published key, in seconds.
    pub key_validity_secs: u64,
    /// Where to reach particular servers instead of discovering them
    /// (`"hs2" = "http://127.0.0.1:8091"`): internal routing, and tests.
    pub overrides: BTreeMap<String, String>,
    /// Only these servers are talked to (exact names, or `*.example.org`); empty: all.
    pub allow: Vec<String>,
    /// Servers never talked to, whatever `allow` says (same patterns).
    pub deny: Vec<String>,
    /// Remote files larger than this are refused (502 `M_TOO_LARGE`), in bytes.
    pub max_remote_bytes: u64,
    /// Connecting, and each wait for more data from a remote server, in seconds.
    pub request_timeout_secs: u64,
    /// A whole remote download, body included, in seconds.
    pub fetch_timeout_secs: u64,
    /// How long a remote "not found" is remembered before asking again, in seconds.
    pub failure_cache_secs: u64,
    /// After a server fails, it is not asked again for this long, doubling with every
    /// further failure up to `backoff_max_secs`.
    pub backoff_initial_secs: u64,
    pub backoff_max_secs: u64,
    /// Size budget for cached remote media and their thumbnails, in bytes; the least
    /// recently used items are evicted past it. 0: unlimited.
    pub remote_cache_bytes: u64,
    /// Addresses (CIDR ranges) federation requests never go to, whatever DNS,
    /// well-known, SRV or a `Location` say; `overrides` are exempt.
    pub ip_blocklist: Vec<String>,
}

impl Default for FederationSettings {
    fn default() -> Self {
        Self {
            signing_key_path: String::new(),
            serve_keys: false,
            key_validity_secs: 24 * 60 * 60,
            overrides: BTreeMap::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            max_remote_bytes: 100 * 1024 * 1024,
            request_timeout_secs: 10,
            fetch_timeout_secs: 120,
            failure_cache_secs: 60,
            backoff_initial_secs: 10,
            backoff_max_secs: 600,
            remote_cache_bytes: 0,
            ip_blocklist: crate::federation::DEFAULT_BLOCKLIST
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThumbnailSettings {
    /// Sizes generated for every uploaded image, as `WIDTHxHEIGHT:crop|scale`.
    pub sizes: Vec<String>,
    /// Generate (and store) other requested sizes on demand; when off, they are served
    /// from the closest pre-generated size that is not smaller.
    pub dynamic: bool,
    /// Largest image (width x height) decoded; larger ones get 413.
    pub max_pixels: u64,
    /// Frames x pixels decoded for one animated thumbnail; more → a still thumbnail.
    pub max_animation_pixels: u64,
    /// Largest file thumbnailed, in bytes; larger ones get 413.
    pub max_source_bytes: u64,
    /// Images decoded at once (0 = one per CPU core).
    pub workers: usize,
    /// MiB of memory that images being thumbnailed may take together, as estimated from
    /// each image's headers before decoding; an image needing more than all of it is
    /// thumbnailed alone (0 = 64 per worker).
    pub memory_mib: u32,
    /// How long a file that failed to thumbnail is not tried again, in seconds.
    pub failure_ttl_secs: u64,
    /// Longest time one image may take to thumbnail, in seconds; longer → 413.
    pub job_timeout_secs: u64,
}

impl Default for ThumbnailSettings {
    fn default() -> Self {
        Self {
            sizes: [
                "32x32:crop",
                "96x96:crop",
                "320x240:scale",
                "640x480:scale",
                "800x600:scale",
            ]
            .map(String::from)
            .to_vec(),
            dynamic: true,
            max_pixels: 32_000_000,
            max_animation_pixels: 400_000_000,
            max_source_bytes: 64 * 1024 * 1024,
            workers: 0,
            memory_mib: 0,
            failure_ttl_secs: 600,
            job_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address to listen on.
    pub bind: String,
    /// Number of HTTP worker threads (0 = one per CPU core).
    pub workers: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeserverSettings {
    /// Base URL of the homeserver, used to check access tokens (`/account/whoami`).
    pub url: String,
    /// Timeout for one request to the homeserver, in seconds.
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// How long a token the homeserver accepted is trusted without asking again.
    pub cache_ttl_secs: u64,
    /// How long a token the homeserver rejected stays rejected without asking again.
    pub negative_cache_ttl_secs: u64,
    /// Tokens accepted without asking the homeserver (appservices, bots): token → user id.
    pub static_tokens: HashMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `sqlite://path/to/file.db` or `postgres://user:pass@host:port/db`.
    pub url: Secret,
    /// Maximum open connections in the pool.
    pub max_connections: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Filesystem,
    S3,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    pub backend: StorageBackend,
    /// Directory for blobs (filesystem backend).
    pub path: PathBuf,
    /// Bucket name (s3 backend).
    pub bucket: Option<String>,
    /// Endpoint URL, e.g. `http://127.0.0.1:8333` (s3 backend; empty = AWS).
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    /// Allow plain-HTTP endpoints (local S3 servers).
    pub allow_http: bool,
    /// Use virtual-hosted-style requests (`bucket.endpoint`) instead of path-style.
    pub virtual_hosted_style: bool,
    /// Key prefix inside the bucket or directory, to share one bucket between deployments.
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSettings {
    /// Largest accepted upload, in bytes (`m.upload.size`).
    pub max_upload_bytes: u64,
    /// Media created while this is on is only served by the authenticated endpoints.
    pub freeze_unauthenticated: bool,
    /// Pending (created but not yet uploaded) media a user may hold at once.
    pub max_pending_uploads: u32,
    /// How long a `/create`d media id stays uploadable, in seconds.
    pub pending_expiry_secs: u64,
    /// Upper bound for a client's `timeout_ms` when waiting for pending media.
    pub max_wait_ms: u64,
    /// How often the sweeper removes orphaned blobs and expired pending media.
    pub sweep_interval_secs: u64,
    /// Blobs younger than this are never swept (uploads in flight).
    pub orphan_grace_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server_name: "localhost".into(),
            http: HttpSettings::default(),
            homeserver: HomeserverSettings::default(),
            auth: AuthSettings::default(),
            database: DatabaseSettings::default(),
            storage: StorageSettings::default(),
            media: MediaSettings::default(),
            thumbnails: ThumbnailSettings::default(),
            federation: FederationSettings::default(),
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8090".into(),
            workers: 0,
        }
    }
}

impl Default for HomeserverSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8008".into(),
            timeout_secs: 10,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            cache_ttl_secs: 60,
            negative_cache_ttl_secs: 10,
            static_tokens: HashMap::new(),
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: Secret("sqlite://data/mxcd.db".into()),
            max_connections: 16,
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            backend: StorageBackend::Filesystem,
            path: "data/media".into(),
            bucket: None,
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            virtual_hosted_style: false,
            prefix: String::new(),
        }
    }
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            max_upload_bytes: 100 * 1024 * 1024,
            freeze_unauthenticated: true,
            max_pending_uploads: 10,
            pending_expiry_secs: 24 * 3600,
            max_wait_ms: 20_000,
            sweep_interval_secs: 3600,
            orphan_grace_secs: 3600,
        }
    }
}

/// The largest object S3's CopyObject accepts.
const S3_MAX_COPY_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// A string that never shows up in `Debug` output or logs.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

/// A configuration error, as one line naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

/// The checked configuration the rest of the program runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub server_name: ServerName,
    pub bind: SocketAddr,
    pub settings: Settings,
    pub static_tokens: HashMap<String, UserId>,
    /// `thumbnails.sizes`, parsed.
    pub thumbnail_sizes: Vec<ThumbnailSpec>,
}

impl Config {
    /// Load defaults, then `file` (if any), then `MXCD__*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(Env::prefixed("MXCD__").split("__"));
        Self::from_figment(figment)
    }

    pub fn from_settings(settings: Settings) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::from(Serialized::defaults(settings)))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let settings: Settings = figment.extract().map_err(|e| {
            // figment reports every error; the first names the key, which is what an operator needs.
            let first = e
                .into_iter()
                .next()
                .map(|e| e.to_string())
                .unwrap_or_default();
            ConfigError(first.replace('\n', " "))
        })?;
        settings.validate()
    }
}

impl Settings {
    fn validate(self) -> Result<Config, ConfigError> {
        let bad = |key: &str, why: &str| ConfigError(format!("`{key}`: {why}"));
        let server_name =
            ServerName::parse(&self.server_name).map_err(|e| bad("server_name", &e.to_string()))?;
        let bind = self
            .http
            .bind
            .parse::<SocketAddr>()
            .map_err(|_| bad("http.bind", "expected an address like 127.0.0.1:8090"))?;
        url::Url::parse(&self.homeserver.url).map_err(|_| {
            bad(
                "homeserver.url",
                "expected a URL like http://127.0.0.1:8008",
            )
        })?;
        let db = self.database.url.expose();
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres:")
            || db.starts_with("postgresql:"))
        {
            return Err(bad("database.url", "expected sqlite://… or postgres://…"));
        }
        if self.database.max_connections == 0 {
            return Err(bad("database.max_connections", "must be at least 1"));
        }
        if self.federation.serve_keys && self.federation.signing_key_path.is_empty() {
            return Err(bad(
                "federation.signing_key_path",
                "required when federation.serve_keys = true",
            ));
        }
        for (name, target) in &self.federation.overrides {
            ServerName::parse(name).map_err(|e| bad("federation.overrides", &e.to_string()))?;
            match url::Url::parse(target) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => {
                    return Err(bad(
                        "federation.overrides",
                        &format!("{target:?} is not a URL like https://10.0.0.2:8448"),
                    ));
                }
            }
        }
        for (key, patterns) in [
            ("federation.allow", &self.federation.allow),
            ("federation.deny", &self.federation.deny),
        ] {
            for p in patterns {
                ServerName::parse(p.strip_prefix("*.").unwrap_or(p)).map_err(|_| {
                    bad(key, &format!("{p:?} is neither a server name nor *.domain"))
                })?;
            }
        }
        crate::federation::Blocklist::parse(&self.federation.ip_blocklist)
            .map_err(|e| bad("federation.ip_blocklist", &e))?;
        if self.federation.max_remote_bytes == 0 {
            return Err(bad("federation.max_remote_bytes", "must be at least 1"));
        }
        if self.federation.request_timeout_secs == 0 || self.federation.fetch_timeout_secs == 0 {
            return Err(bad(
                "federation.request_timeout_secs",
                "timeouts must be at least 1 second",
            ));
        }
        if self.storage.backend == StorageBackend::S3
            && self.storage.bucket.as_deref().unwrap_or("").is_empty()
        {
            return Err(bad(
                "storage.bucket",
                "required when storage.backend = \"s3\"",
            ));
        }
        // Finished uploads move to their content address with one CopyObject, which S3
        // limits to 5 GiB.
        if self.storage.backend == StorageBackend::S3
            && self.media.max_upload_bytes > S3_MAX_COPY_BYTES
        {
            return Err(bad(
                "media.max_upload_bytes",
                "at most 5368709120 (5 GiB) with storage.backend = \"s3\"",
            ));
        }
        if self.media.max_upload_bytes == 0 {
            return Err(bad("media.max_upload_bytes", "must be at least 1"));
        }
        if self.media.pending_expiry_secs == 0 {
            return Err(bad("media.pending_expiry_secs", "must be at least 1"));
        }
        if self.media.sweep_interval_secs == 0 {
            return Err(bad("media.sweep_interval_secs", "must be at least 1"));
        }
        let mut static_tokens = HashMap::new();
        for (token, user) in &self.auth.static_tokens {
            let user = UserId::parse(user).map_err(|_| {
                bad(
                    "auth.static_tokens",
                    &format!("{user:?} is not a Matrix user id"),
                )
            })?;
            static_tokens.insert(token.clone(), user);
        }
        let thumbnail_sizes = self
            .thumbnails
            .sizes
            .iter()
            .map(|s| {
                s.parse::<ThumbnailSpec>()
                    .map_err(|e| bad("thumbnails.sizes", &format!("{s:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.thumbnails.max_pixels == 0 {
            return Err(bad("thumbnails.max_pixels", "must be at least 1"));
        }
        Ok(Config {
            server_name,
            bind,
            settings: self,
            static_tokens,
            thumbnail_sizes,
        })
    }
}

impl MediaSettings {
    pub fn pending_expiry(&self) -> Duration {
        Duration::from_secs(self.pending_expiry_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_settings(Settings::default()).unwrap();
        assert_eq!(c.server_name.as_str(), "localhost");
        assert_eq!(c.settings.media.max_upload_bytes, 104_857_600);
        assert!(c.settings.media.freeze_unauthenticated);
    }

    #[test]
    fn errors_name_the_key() {
        let f = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string("[media]\nmax_upload_bytes = \"lots\""));
        let e = Config::from_figment(f).unwrap_err().to_string();
        assert!(e.contains("max_upload_bytes"), "{e}");
        assert!(!e.contains('\n'));

        let f = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string("[media]\nmax_uplod_bytes = 5"));
        let e = Config::from_figment(f).unwrap_err().to_string();
        assert!(e.contains("max_uplod_bytes"), "{e}");

        let f = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string("server_name = \"bad name\""));
        let e = Config::from_figment(f).unwrap_err().to_string();
        assert!(e.contains("server_name"), "{e}");
    }

    #[test]
    fn s3_requires_a_bucket() {
        let f = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string("[storage]\nbackend = \"s3\""));
        let e = Config::from_figment(f).unwrap_err().to_string();
        assert!(e.contains("storage.bucket"), "{e}");
    }

    #[test]
    fn the_shipped_example_is_valid_and_matches_the_defaults() {
        let f = Figment::from(Toml::string(include_str!("../config/mxcd.example.toml")));
        let example = Config::from_figment(f).expect("example config parses");
        let defaults = Settings::default();
        assert_eq!(
            json_of(&example.settings),
            json_of(&defaults),
            "config/mxcd.example.toml documents the defaults"
        );
    }

    fn json_of(s: &Settings) -> String {
        serde_json::to_string(s).unwrap()
    }

    #[test]
    fn s3_uploads_are_capped_at_the_copy_limit() {
        let f = Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(
            "[storage]\nbackend = \"s3\"\nbucket = \"b\"\n[media]\nmax_upload_bytes = 6000000000",
        ));
        let e = Config::from_figment(f).unwrap_err().to_string();
        assert!(e.contains("media.max_upload_bytes"), "{e}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = format!("{:?}", Settings::default().database);
        assert!(!s.contains("sqlite://"), "{s}");
    }
}
