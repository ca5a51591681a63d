//! Wiring: build the services from a [`Config`] and run the HTTP server.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::db::{self, MediaRepo, RepoError};
use crate::federation::{FederationClient, KeyRing, ServerKey};
use crate::media::{MediaService, RemoteOptions, ThumbnailOptions};
use crate::routes;
use crate::storage::{BlobStore, StorageError};
use crate::thumbnail::Limits;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the database: {0}")]
    Database(#[source] RepoError),
    #[error("cannot migrate the database: {0}")]
    Migrate(#[source] RepoError),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    SigningKey(#[from] crate::federation::KeyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A built, bound, not yet running server.
pub struct Application {
    server: Server,
    addr: SocketAddr,
    media: MediaService,
}

/// Connect to the database and apply migrations.
pub async fn open_repo(config: &Config) -> Result<Arc<dyn MediaRepo>, StartupError> {
    let db = &config.settings.database;
    let repo = db::connect(db.url.expose(), db.max_connections)
        .await
        .map_err(StartupError::Database)?;
    repo.migrate().await.map_err(StartupError::Migrate)?;
    Ok(repo)
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let listener = TcpListener::bind(config.bind).map_err(|source| StartupError::Bind {
            addr: config.bind,
            source,
        })?;
        Self::build_on(config, listener).await
    }

    /// Build on a socket already bound (`http.bind` is then not used): tests that need
    /// to know each other's addresses before starting bind first.
    pub async fn build_on(config: Config, listener: TcpListener) -> Result<Self, StartupError> {
        let repo = open_repo(&config).await?;
        let s = &config.settings;
        let blobs =
            BlobStore::from_settings(&s.storage, Duration::from_secs(s.media.orphan_grace_secs))?;
        blobs.check().await?;
        let thumbnails = ThumbnailOptions {
            sizes: config.thumbnail_sizes.clone(),
            dynamic: s.thumbnails.dynamic,
            limits: Limits {
                max_pixels: s.thumbnails.max_pixels,
                max_animation_pixels: s.thumbnails.max_animation_pixels,
            },
            max_source_bytes: s.thumbnails.max_source_bytes,
            workers: s.thumbnails.workers,
            memory_mib: s.thumbnails.memory_mib,
            failure_ttl: Duration::from_secs(s.thumbnails.failure_ttl_secs),
            job_timeout: Duration::from_secs(s.thumbnails.job_timeout_secs),
        };
        let federation = &s.federation;
        let key = if federation.signing_key_path.is_empty() {
            None
        } else {
            Some(Arc::new(ServerKey::load_or_generate(Path::new(
                &federation.signing_key_path,
            ))?))
        };
        let client = FederationClient::new(config.server_name.clone(), key.clone(), federation);
        let mut media = MediaService::new(
            repo,
            blobs,
            config.server_name.clone(),
            s.media.clone(),
            thumbnails,
        );
        if key.is_some() {
            media = media.with_remote(RemoteOptions {
                client: client.clone(),
                max_bytes: federation.max_remote_bytes,
                fetch_timeout: Duration::from_secs(federation.fetch_timeout_secs),
                failure_ttl: Duration::from_secs(federation.failure_cache_secs),
                cache_bytes: federation.remote_cache_bytes,
            });
        } else {
            tracing::info!("no federation.signing_key_path: remote media will not be fetched");
        }
        let inbound = web::Data::new(routes::federation::Inbound {
            keys: KeyRing::new(
                client.clone(),
                Duration::from_secs(federation.request_timeout_secs),
            ),
            client,
        });
        let authenticator = Authenticator::new(
            &s.homeserver.url,
            Duration::from_secs(s.homeserver.timeout_secs),
            Duration::from_secs(s.auth.cache_ttl_secs),
            Duration::from_secs(s.auth.negative_cache_ttl_secs),
            config.static_tokens.clone(),
        );
        let addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: config.bind,
            source,
        })?;

        let key_server = key.filter(|_| federation.serve_keys).map(|key| {
            web::Data::new(routes::federation::KeyServer {
                key,
                server_name: config.server_name.clone(),
                validity: Duration::from_secs(federation.key_validity_secs),
            })
        });
        let media_data = web::Data::new(media.clone());
        let auth_data = web::Data::new(authenticator);
        let mut server = HttpServer::new(move || {
            let key_server = key_server.clone();
            App::new()
                .app_data(media_data.clone())
                .app_data(auth_data.clone())
                .app_data(inbound.clone())
                .configure(routes::configure)
                .configure(routes::federation::configure_media)
                .configure(move |cfg| {
                    if let Some(key_server) = key_server {
                        routes::federation::configure_key_server(cfg, key_server);
                    }
                })
                .default_service(web::to(routes::unrecognized))
                .wrap_fn(routes::preflight_and_log)
                .wrap(routes::default_headers())
        })
        .listen(listener)
        .map_err(|source| StartupError::Bind { addr, source })?;
        if s.http.workers > 0 {
            server = server.workers(s.http.workers);
        }
        Ok(Self {
            server: server.run(),
            addr,
            media,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle to stop the server (tests run several instances in one process).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub fn media(&self) -> &MediaService {
        &self.media
    }

    /// Serve until the process is told to stop (SIGINT/SIGTERM), sweeping in the background.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let sweeper = self.media.spawn_sweeper();
        let result = self.server.await;
        sweeper.abort();
        result
    }
}
