//! The media rules: upload, async upload, download, and the sweeper. No HTTP types here;
//! `routes` translates requests into these calls and [`MediaError`]s into responses.

mod budget;
pub mod pool;
mod remote;
mod single_flight;
mod sweeper;
mod thumbnails;

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::MediaSettings;
use crate::db::{
    Content, MediaRecord, MediaRepo, MediaState, Millis, NewMedia, NewPending, RepoError,
};
use crate::domain::{ContentHash, ContentType, FileName, MediaId, Mxc, ServerName, UserId};
use crate::storage::{BlobStore, PutError, StorageError};

pub use remote::RemoteOptions;
pub use sweeper::SweepReport;
pub use thumbnails::{ServedThumbnail, ThumbnailOptions};

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("media not found")]
    NotFound,
    #[error("content is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("media already has content")]
    CannotOverwrite,
    #[error("media has not been uploaded yet")]
    NotYetUploaded,
    #[error("too many pending uploads")]
    TooManyPending,
    /// Not an image that can be thumbnailed (or corrupt).
    #[error("content cannot be thumbnailed")]
    NotThumbnailable,
    #[error("content is too large to thumbnail")]
    ThumbnailTooLarge,
    /// Remote media larger than we fetch.
    #[error("remote content is too large")]
    RemoteTooLarge,
    /// The remote server could not be reached or gave no usable answer.
    #[error("remote media could not be fetched")]
    RemoteUnavailable,
    #[error("internal error: {0}")]
    Internal(String),
    #[error("reading the request body failed")]
    BodyRead(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// How a download was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `/_matrix/client/v1/media/...`: an authenticated user.
    Authenticated,
    /// `/_matrix/media/v3/...`: unauthenticated and subject to the freeze.
    Legacy { allow_remote: bool },
    /// `/_matrix/federation/v1/media/...`: another server, for our own media only.
    Federation,
}

/// What the client declared about an upload.
#[derive(Debug, Clone, Default)]
pub struct UploadMeta {
    pub content_type: Option<ContentType>,
    pub filename: Option<FileName>,
    /// `Content-Length`, when the client sent one.
    pub declared_len: Option<u64>,
}

/// Media whose content can be served.
#[derive(Debug, Clone)]
pub struct ReadyMedia {
    pub record: MediaRecord,
    pub content: Content,
}

/// A reservation made by [`MediaService::create`].
#[derive(Debug, Clone)]
pub struct Reservation {
    pub mxc: Mxc,
    pub expires_ts: Millis,
}

/// Last-access times are written at most this often per media item.
const TOUCH_INTERVAL_MS: Millis = 10 * 60 * 1000;
/// How often a waiting download re-reads the database (uploads may land on another process).
const WAIT_POLL: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct MediaService {
    repo: Arc<dyn MediaRepo>,
    blobs: BlobStore,
    server_name: ServerName,
    settings: Arc<MediaSettings>,
    /// Woken whenever this process finishes an async upload.
    uploaded: Arc<Notify>,
    thumbs: thumbnails::SharedThumbnailer,
    /// Fetching remote media; None when federation is not set up.
    remote: Option<Arc<remote::Remote>>,
}

impl MediaService {
    pub fn new(
        repo: Arc<dyn MediaRepo>,
        blobs: BlobStore,
        server_name: ServerName,
        settings: MediaSettings,
        thumbnails: ThumbnailOptions,
    ) -> Self {
        Self {
            repo,
            blobs,
            server_name,
            settings: Arc::new(settings),
            uploaded: Arc::new(Notify::new()),
            thumbs: Arc::new(thumbnails::Thumbnailer::new(thumbnails)),
            remote: None,
        }
    }

    /// Fetch remote media from other servers on first request.
    pub fn with_remote(mut self, options: RemoteOptions) -> Self {
        self.remote = Some(Arc::new(remote::Remote::new(options)));
        self
    }

    pub fn max_upload_bytes(&self) -> u64 {
        self.settings.max_upload_bytes
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Store a new upload and return its `mxc://` URI.
    #[tracing::instrument(skip_all, fields(uploader = %uploader))]
    pub async fn upload<S, E>(
        &self,
        uploader: &UserId,
        meta: UploadMeta,
        body: S,
    ) -> Result<Mxc, MediaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        let content = self.store_content(meta, body).await?;
        let now = now_ms();
        loop {
            let mxc = Mxc::new(self.server_name.clone(), MediaId::generate());
            let media = NewMedia {
                mxc: mxc.clone(),
                uploader: Some(uploader.clone()),
                content: content.clone(),
                now,
                authenticated: self.settings.freeze_unauthenticated,
            };
            // A clash of 190-bit random ids does not happen, but if it did, draw again.
            if self.repo.insert_media(&media).await?.is_ok() {
                tracing::info!(%mxc, size = content.size, "uploaded");
                self.after_upload(&mxc, &content);
                return Ok(mxc);
            }
        }
    }

    /// Reserve a media id for a later `PUT` (MSC2246).
    pub async fn create(&self, uploader: &UserId) -> Result<Reservation, MediaError> {
        let now = now_ms();
        let expiry = i64::try_from(self.settings.pending_expiry().as_millis()).unwrap_or(i64::MAX);
        let pending = NewPending {
            mxc: Mxc::new(self.server_name.clone(), MediaId::generate()),
            uploader: uploader.clone(),
            now,
            expires_ts: now.saturating_add(expiry),
            authenticated: self.settings.freeze_unauthenticated,
        };
        if !self
            .repo
            .create_pending(&pending, self.settings.max_pending_uploads)
            .await?
        {
            return Err(MediaError::TooManyPending);
        }
        Ok(Reservation {
            mxc: pending.mxc,
            expires_ts: pending.expires_ts,
        })
    }

    /// Check that `uploader` may upload content to `mxc` now. Done before the body is read.
    pub async fn check_pending_upload(
        &self,
        uploader: &UserId,
        mxc: &Mxc,
    ) -> Result<(), MediaError> {
        if mxc.server_name != self.server_name {
            return Err(MediaError::NotFound);
        }
        let record = self
            .repo
            .get_media(mxc)
            .await?
            .ok_or(MediaError::NotFound)?;
        if record.uploader.as_ref() != Some(uploader) {
            return Err(MediaError::Forbidden("media was created by another user"));
        }
        match record.state {
            MediaState::Ready { .. } => Err(MediaError::CannotOverwrite),
            MediaState::Pending { expires_ts } if expires_ts <= now_ms() => {
                Err(MediaError::NotFound)
            }
            MediaState::Pending { .. } => Ok(()),
        }
    }

    /// Upload content to a reserved media id. Call [`Self::check_pending_upload`] first.
    #[tracing::instrument(skip_all, fields(%mxc))]
    pub async fn upload_pending<S, E>(
        &self,
        mxc: &Mxc,
        meta: UploadMeta,
        body: S,
    ) -> Result<(), MediaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        let content = self.store_content(meta, body).await?;
        if !self.repo.finish_pending(mxc, &content, now_ms()).await? {
            // Another upload to the same id finished first; ours is now an orphan blob
            // unless shared, and the sweeper takes care of it.
            return Err(MediaError::CannotOverwrite);
        }
        tracing::info!(size = content.size, "async upload finished");
        self.after_upload(mxc, &content);
        self.uploaded.notify_waiters();
        Ok(())
    }

    async fn store_content<S, E>(&self, meta: UploadMeta, body: S) -> Result<Content, MediaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        let limit = self.settings.max_upload_bytes;
        if meta.declared_len.is_some_and(|len| len > limit) {
            return Err(MediaError::TooLarge { limit });
        }
        let blob = self
            .blobs
            .put_stream(body, limit)
            .await
            .map_err(|e| match e {
                PutError::TooLarge { limit } => MediaError::TooLarge { limit },
                PutError::Source(e) => MediaError::BodyRead(Box::new(e)),
                PutError::Storage(e) => MediaError::Storage(e),
            })?;
        Ok(Content {
            content_type: meta.content_type.unwrap_or_else(ContentType::octet_stream),
            filename: meta.filename,
            size: blob.size,
            sha256: blob.hash,
        })
    }

    /// Look up media for download, waiting up to `wait` for content that was reserved
    /// but not uploaded yet.
    pub async fn fetch(
        &self,
        mxc: &Mxc,
        access: Access,
        wait: Duration,
    ) -> Result<ReadyMedia, MediaError> {
        if mxc.server_name != self.server_name {
            return self.fetch_remote(mxc, access).await;
        }
        let deadline = Instant::now() + wait.min(Duration::from_millis(self.settings.max_wait_ms));
        loop {
            let notified = self.uploaded.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let record = self
                .repo
                .get_media(mxc)
                .await?
                .ok_or(MediaError::NotFound)?;
            match record.state.clone() {
                MediaState::Ready { content, .. } => {
                    if matches!(access, Access::Legacy { .. }) && record.authenticated {
                        return Err(MediaError::NotFound);
                    }
                    self.touch(&record);
                    return Ok(ReadyMedia { record, content });
                }
                MediaState::Pending { expires_ts } if expires_ts <= now_ms() => {
                    return Err(MediaError::NotFound);
                }
                MediaState::Pending { .. } => {
                    if Instant::now() >= deadline {
                        return Err(MediaError::NotYetUploaded);
                    }
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep(WAIT_POLL) => {}
                        _ = tokio::time::sleep_until(deadline) => {}
                    }
                }
            }
        }
    }

    /// Open a blob of `size` bytes (media content or a thumbnail), optionally only a
    /// byte range of it.
    pub async fn open(
        &self,
        sha256: &ContentHash,
        size: u64,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, MediaError> {
        if size == 0 {
            return Ok(futures_util::stream::empty().boxed());
        }
        match self.blobs.get(sha256, range).await {
            Ok(stream) => Ok(stream),
            Err(StorageError::NotFound) => {
                tracing::error!(%sha256, "metadata refers to a missing blob");
                Err(MediaError::NotFound)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Start pre-generating thumbnails of what looks like an image.
    fn after_upload(&self, mxc: &Mxc, content: &Content) {
        if content.content_type.essence().starts_with("image/") {
            self.spawn_pregeneration(mxc.clone());
        }
    }

    fn touch(&self, record: &MediaRecord) {
        let now = now_ms();
        if now - record.last_access_ts < TOUCH_INTERVAL_MS {
            return;
        }
        let repo = self.repo.clone();
        let mxc = record.mxc.clone();
        tokio::spawn(async move {
            if let Err(e) = repo.touch_media(&mxc, now).await {
                tracing::warn!(error = %e, "could not record media access");
            }
        });
    }

    /// Remove expired reservations, abandoned staging objects and unreferenced blobs.
    pub async fn sweep(&self) -> Result<SweepReport, MediaError> {
        sweeper::sweep(
            self.repo.as_ref(),
            &self.blobs,
            Duration::from_secs(self.settings.orphan_grace_secs),
        )
        .await
    }

    /// Run [`Self::sweep`] every `sweep_interval_secs` until the process ends.
    pub fn spawn_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        let interval = Duration::from_secs(self.settings.sweep_interval_secs);
        tokio::spawn(async move {
            // The first sweep comes one interval after start-up, not at once.
            let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                match service.sweep().await {
                    Ok(report) => tracing::info!(?report, "sweep finished"),
                    Err(e) => tracing::warn!(error = %e, "sweep failed"),
                }
            }
        })
    }
}

pub fn now_ms() -> Millis {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}
