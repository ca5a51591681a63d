//! Remote media: fetched from its origin on first request, once however many ask at the
//! same time (in this process and in others sharing the database), stored as a blob and
//! a media row under the origin's server name, then served (and thumbnailed) like local
//! media. Recent "not found" answers are remembered; servers that fail are backed off by
//! the federation client; the cache is kept within its size budget.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;

use bytes::Bytes;
use futures_util::TryStreamExt;
use futures_util::stream::BoxStream;

use super::single_flight::{Flights, Role};
use super::{
    Access, MediaError, MediaService, ReadyMedia, ServedThumbnail, TOUCH_INTERVAL_MS, now_ms,
};
use crate::db::{Content, MediaState, NewMedia, ThumbnailContent, ThumbnailRecord};
use crate::domain::{ContentType, FileName, Mxc, ServerName, ThumbnailSpec};
use crate::federation::{FederationClient, FederationError, RemoteMediaError};
use crate::storage::{PutError, StoredBlob};

/// How remote media is fetched and kept.
#[derive(Clone)]
pub struct RemoteOptions {
    pub client: FederationClient,
    /// Remote files larger than this are refused.
    pub max_bytes: u64,
    /// A whole fetch, body included.
    pub fetch_timeout: Duration,
    /// How long a remote "not found" (or "too large") is remembered.
    pub failure_ttl: Duration,
    /// Size budget of the remote cache in bytes; 0: unlimited.
    pub cache_bytes: u64,
}

/// Why a remote fetch failed, remembered for a while.
#[derive(Debug, Clone, Copy)]
enum Failure {
    NotFound,
    TooLarge,
}

impl From<Failure> for MediaError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::NotFound => MediaError::NotFound,
            Failure::TooLarge => MediaError::RemoteTooLarge,
        }
    }
}

pub(super) struct Remote {
    options: RemoteOptions,
    flights: Flights<Mxc>,
    thumbnail_flights: Flights<(Mxc, ThumbnailSpec, bool)>,
    failures: Cache<Mxc, Failure>,
    /// Remote downloads this process started.
    fetches: AtomicU64,
    /// An eviction task is running in this process.
    evicting: AtomicBool,
    /// More was cached since the running eviction last looked.
    eviction_wanted: AtomicBool,
}

impl Remote {
    pub(super) fn new(options: RemoteOptions) -> Self {
        Self {
            failures: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(options.failure_ttl)
                .build(),
            options,
            flights: Flights::default(),
            thumbnail_flights: Flights::default(),
            fetches: AtomicU64::new(0),
            evicting: AtomicBool::new(false),
            eviction_wanted: AtomicBool::new(false),
        }
    }
}

/// The lease name of fetching remote media.
const FETCH_WORK: &str = "remote fetch";
/// How much of a fetched remote thumbnail is read to learn its size.
const PROBE_BYTES: u64 = 256 * 1024;

/// A remote thumbnail fetch that did not work out.
enum ThumbnailFetch {
    /// Do without: fetch the original and make the thumbnail here.
    Fallback,
    Failed(MediaError),
}

impl MediaService {
    /// Remote downloads this process has started, for tests and operators.
    pub fn remote_fetches(&self) -> u64 {
        self.remote
            .as_ref()
            .map_or(0, |r| r.fetches.load(Ordering::Relaxed))
    }

    /// Remote media for a download: from the cache, or fetched from its origin.
    pub(super) async fn fetch_remote(
        &self,
        mxc: &Mxc,
        access: Access,
    ) -> Result<ReadyMedia, MediaError> {
        loop {
            if let Some(ready) = self.cached_remote(mxc, access).await? {
                return Ok(ready);
            }
            let Some(remote) = &self.remote else {
                return Err(MediaError::NotFound);
            };
            match access {
                Access::Legacy {
                    allow_remote: false,
                }
                | Access::Federation => {
                    return Err(MediaError::NotFound);
                }
                // Newly cached media is not served on the legacy endpoints under the
                // freeze, so it is not fetched for them either.
                Access::Legacy { .. } if self.settings.freeze_unauthenticated => {
                    return Err(MediaError::NotFound);
                }
                _ => {}
            }
            if let Some(failure) = remote.failures.get(mxc).await {
                return Err(failure.into());
            }
            let _flight = match remote.flights.join(mxc.clone()) {
                Role::Follower(f) => {
                    f.wait().await;
                    continue;
                }
                Role::Leader(guard) => guard,
            };
            let lease_ttl = remote.options.fetch_timeout + Duration::from_secs(30);
            let Some(_lease) = self
                .lease_work(mxc, FETCH_WORK.to_owned(), lease_ttl)
                .await?
            else {
                // Another process is fetching it.
                self.wait_for_lease(mxc, FETCH_WORK).await?;
                continue;
            };
            // It may have landed between our look and our lease.
            if let Some(ready) = self.cached_remote(mxc, access).await? {
                return Ok(ready);
            }
            self.download_remote(remote, mxc).await?;
        }
    }

    async fn cached_remote(
        &self,
        mxc: &Mxc,
        access: Access,
    ) -> Result<Option<ReadyMedia>, MediaError> {
        let Some(record) = self.repo.get_media(mxc).await? else {
            return Ok(None);
        };
        let MediaState::Ready { content, .. } = record.state.clone() else {
            return Ok(None);
        };
        if matches!(access, Access::Legacy { .. }) && record.authenticated {
            return Err(MediaError::NotFound);
        }
        self.touch(&record);
        Ok(Some(ReadyMedia { record, content }))
    }

    /// Download `mxc` from its origin into storage and record it.
    async fn download_remote(&self, remote: &Remote, mxc: &Mxc) -> Result<(), MediaError> {
        remote.fetches.fetch_add(1, Ordering::Relaxed);
        let o = &remote.options;
        let origin = &mxc.server_name;
        let fetched = within_fetch_timeout(remote, mxc, async {
            let file = o
                .client
                .download_media(origin, &mxc.media_id, o.max_bytes, o.fetch_timeout)
                .await?;
            let blob = self.store_remote(remote, origin, file.body).await?;
            Ok((file.content_type, file.filename, blob))
        })
        .await?;
        let (content_type, filename, blob) = match fetched {
            Ok(found) => found,
            Err(e) => return Err(self.remote_failed(remote, mxc, e).await),
        };
        let content = Content {
            content_type: content_type
                .and_then(|t| ContentType::parse(&t).ok())
                .unwrap_or_else(ContentType::octet_stream),
            filename: filename.and_then(|f| FileName::parse(&f).ok()),
            size: blob.size,
            sha256: blob.hash,
        };
        let media = NewMedia {
            mxc: mxc.clone(),
            uploader: None,
            content: content.clone(),
            now: now_ms(),
            authenticated: self.settings.freeze_unauthenticated,
        };
        // Already there means another process won a race past its lease: same content.
        let _ = self.repo.insert_media(&media).await?;
        tracing::info!(%mxc, size = content.size, "cached remote media");
        self.after_upload(mxc, &content);
        if o.cache_bytes > 0 {
            self.spawn_eviction(o.cache_bytes);
        }
        Ok(())
    }

    async fn remote_failed(&self, remote: &Remote, mxc: &Mxc, e: RemoteMediaError) -> MediaError {
        let remember = |f: Failure| async move {
            remote.failures.insert(mxc.clone(), f).await;
            MediaError::from(f)
        };
        match e {
            RemoteMediaError::NotFound => remember(Failure::NotFound).await,
            RemoteMediaError::TooLarge => {
                tracing::info!(%mxc, "remote media is too large");
                remember(Failure::TooLarge).await
            }
            RemoteMediaError::NotYetUploaded => MediaError::NotYetUploaded,
            RemoteMediaError::Federation(FederationError::Denied(_)) => {
                MediaError::Forbidden("Federation with this server is not allowed")
            }
            RemoteMediaError::Federation(e) => {
                tracing::warn!(%mxc, error = %e, "cannot fetch remote media");
                MediaError::RemoteUnavailable
            }
        }
    }

    /// A thumbnail of remote media whose original is not cached, as its origin makes
    /// it (`/_matrix/federation/v1/media/thumbnail`), stored under the request. None:
    /// make it here from the original instead (it is cached, the origin could not make
    /// one, or this is not an authenticated request).
    pub(super) async fn remote_thumbnail(
        &self,
        mxc: &Mxc,
        spec: ThumbnailSpec,
        animated: bool,
        access: Access,
    ) -> Result<Option<ServedThumbnail>, MediaError> {
        let Some(remote) = &self.remote else {
            return Ok(None);
        };
        if access != Access::Authenticated || self.repo.get_media(mxc).await?.is_some() {
            return Ok(None);
        }
        let work = format!("remote thumbnail {spec} animated={animated}");
        loop {
            if let Some(t) = self.stored_exactly(mxc, spec, animated).await? {
                self.touch_thumbnails(mxc);
                return Ok(Some(t.into()));
            }
            if let Some(failure) = remote.failures.get(mxc).await {
                return Err(failure.into());
            }
            let _flight = match remote.thumbnail_flights.join((mxc.clone(), spec, animated)) {
                Role::Follower(f) => {
                    f.wait().await;
                    continue;
                }
                Role::Leader(guard) => guard,
            };
            let lease_ttl = remote.options.fetch_timeout + Duration::from_secs(30);
            let Some(_lease) = self.lease_work(mxc, work.clone(), lease_ttl).await? else {
                self.wait_for_lease(mxc, &work).await?;
                continue;
            };
            if self.stored_exactly(mxc, spec, animated).await?.is_some() {
                continue;
            }
            match self
                .download_remote_thumbnail(remote, mxc, spec, animated)
                .await
            {
                Ok(()) => {}
                Err(ThumbnailFetch::Fallback) => return Ok(None),
                Err(ThumbnailFetch::Failed(e)) => return Err(e),
            }
        }
    }

    /// The stored thumbnail answering exactly this request, if any.
    async fn stored_exactly(
        &self,
        mxc: &Mxc,
        spec: ThumbnailSpec,
        animated: bool,
    ) -> Result<Option<ThumbnailRecord>, MediaError> {
        let stored = self.repo.list_thumbnails(mxc).await?;
        Ok(stored
            .into_iter()
            .find(|t| t.spec == spec && t.animated == animated))
    }

    async fn download_remote_thumbnail(
        &self,
        remote: &Remote,
        mxc: &Mxc,
        spec: ThumbnailSpec,
        animated: bool,
    ) -> Result<(), ThumbnailFetch> {
        remote.fetches.fetch_add(1, Ordering::Relaxed);
        let o = &remote.options;
        let fetched = within_fetch_timeout(remote, mxc, async {
            let file = o
                .client
                .download_thumbnail(
                    &mxc.server_name,
                    &mxc.media_id,
                    &spec,
                    animated,
                    o.max_bytes,
                    o.fetch_timeout,
                )
                .await?;
            let blob = self
                .store_remote(remote, &mxc.server_name, file.body)
                .await?;
            Ok((file.content_type, blob))
        })
        .await
        .map_err(ThumbnailFetch::Failed)?;
        let (content_type, blob) = match fetched {
            Ok(found) => found,
            Err(RemoteMediaError::Federation(FederationError::BadResponse { server, reason })) => {
                tracing::info!(%mxc, %server, %reason, "no remote thumbnail; making one here");
                return Err(ThumbnailFetch::Fallback);
            }
            Err(e) => {
                return Err(ThumbnailFetch::Failed(
                    self.remote_failed(remote, mxc, e).await,
                ));
            }
        };
        // Its real size, for serving it to other requests of the same size or smaller.
        let head: Vec<u8> = self
            .blobs
            .get(&blob.hash, Some(0..blob.size.min(PROBE_BYTES)))
            .await
            .map_err(|e| ThumbnailFetch::Failed(e.into()))?
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| ThumbnailFetch::Failed(e.into()))?
            .concat();
        let probe = match crate::thumbnail::probe(&head, &self.thumbnail_limits()) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(%mxc, error = %e, "the remote thumbnail is not an image; making one here");
                return Err(ThumbnailFetch::Fallback);
            }
        };
        let content_type = content_type
            .and_then(|t| ContentType::parse(&t).ok())
            .filter(|t| t.essence().starts_with("image/"))
            .or_else(|| {
                crate::thumbnail::web_mime(probe.format).and_then(|m| ContentType::parse(m).ok())
            })
            .unwrap_or_else(ContentType::octet_stream);
        let record = ThumbnailRecord {
            spec,
            animated,
            width: probe.width,
            height: probe.height,
            content: ThumbnailContent {
                content_type,
                size: blob.size,
                sha256: blob.hash,
            },
        };
        self.repo
            .insert_thumbnail(mxc, &record, now_ms())
            .await
            .map_err(|e| ThumbnailFetch::Failed(e.into()))?;
        tracing::info!(%mxc, %spec, animated, "cached a remote thumbnail");
        if o.cache_bytes > 0 {
            self.spawn_eviction(o.cache_bytes);
        }
        Ok(())
    }

    /// Record an access to the thumbnails of remote media whose original is not
    /// cached, at most once per touch interval.
    fn touch_thumbnails(&self, mxc: &Mxc) {
        let repo = self.repo.clone();
        let mxc = mxc.clone();
        let now = now_ms();
        tokio::spawn(async move {
            if let Err(e) = repo
                .touch_thumbnails(&mxc, now, now - TOUCH_INTERVAL_MS)
                .await
            {
                tracing::warn!(error = %e, "could not record thumbnail access");
            }
        });
    }

    /// Stream a remote body into storage within the size limit.
    async fn store_remote(
        &self,
        remote: &Remote,
        origin: &ServerName,
        body: BoxStream<'static, Result<Bytes, std::io::Error>>,
    ) -> Result<StoredBlob, RemoteMediaError> {
        let o = &remote.options;
        self.blobs
            .put_stream(body, o.max_bytes)
            .await
            .map_err(|e| match e {
                PutError::TooLarge { .. } => RemoteMediaError::TooLarge,
                PutError::Source(e) => {
                    o.client.record_failure(origin);
                    RemoteMediaError::Federation(FederationError::Unreachable {
                        server: origin.clone(),
                        reason: format!("the body broke off: {e}"),
                    })
                }
                PutError::Storage(e) => {
                    RemoteMediaError::Federation(FederationError::Unreachable {
                        server: origin.clone(),
                        reason: format!("storing it failed: {e}"),
                    })
                }
            })
    }

    /// Evict the least recently used remote media beyond `budget` bytes, in the
    /// background, one task per process at a time (a task already running looks again
    /// before it ends). Blobs left unreferenced go with the sweeper.
    fn spawn_eviction(&self, budget: u64) {
        let Some(remote) = self.remote.clone() else {
            return;
        };
        remote.eviction_wanted.store(true, Ordering::SeqCst);
        if remote.evicting.swap(true, Ordering::SeqCst) {
            return;
        }
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                while remote.eviction_wanted.swap(false, Ordering::SeqCst) {
                    match service.evict_remote(budget).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(evicted = n, "remote media cache trimmed"),
                        Err(e) => tracing::warn!(error = %e, "remote media eviction failed"),
                    }
                }
                remote.evicting.store(false, Ordering::SeqCst);
                // Asked for between the last look and letting go: look again, unless
                // the asker started a task of its own.
                if !remote.eviction_wanted.load(Ordering::SeqCst)
                    || remote.evicting.swap(true, Ordering::SeqCst)
                {
                    break;
                }
            }
        });
    }

    /// Bytes of remote media and their thumbnails cached (by all processes).
    pub async fn remote_cache_bytes(&self) -> Result<u64, MediaError> {
        Ok(self.repo.remote_cache_bytes(&self.server_name).await?)
    }

    /// Remove the least recently used remote media until the rest fits `budget` bytes.
    /// An item goes with all its thumbnails. Returns how many items went.
    pub async fn evict_remote(&self, budget: u64) -> Result<u64, MediaError> {
        let mut evicted = 0;
        loop {
            // Measured afresh for each batch: other processes may evict too.
            let mut used = self.remote_cache_bytes().await?;
            if used <= budget {
                return Ok(evicted);
            }
            let oldest = self
                .repo
                .least_recent_remote(&self.server_name, 100)
                .await?;
            if oldest.is_empty() {
                return Ok(evicted);
            }
            for (mxc, size) in oldest {
                if used <= budget {
                    break;
                }
                if self.repo.delete_media(&mxc).await? {
                    used = used.saturating_sub(size);
                    evicted += 1;
                }
            }
        }
    }
}

/// Run a remote fetch within the fetch time limit. Running out of time counts against
/// the origin and is the outer error; the fetch's own result is the inner one.
async fn within_fetch_timeout<T>(
    remote: &Remote,
    mxc: &Mxc,
    fetch: impl Future<Output = Result<T, RemoteMediaError>>,
) -> Result<Result<T, RemoteMediaError>, MediaError> {
    tokio::time::timeout(remote.options.fetch_timeout, fetch)
        .await
        .map_err(|_| {
            remote.options.client.record_failure(&mxc.server_name);
            tracing::warn!(%mxc, "remote fetch timed out");
            MediaError::RemoteUnavailable
        })
}
