//! Metadata layer: one trait, [`MediaRepo`], with a SQLite and a Postgres implementation
//! sharing the same SQL (both accept `$N` placeholders).

mod sql;

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::{ContentHash, ContentType, FileName, Mxc, ServerName, ThumbnailSpec, UserId};

pub use sql::{PgRepo, SqliteRepo};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("row {0} holds invalid data: {1}")]
    Corrupt(String, &'static str),
}

/// The content of an uploaded media item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub content_type: ContentType,
    pub filename: Option<FileName>,
    pub size: u64,
    pub sha256: ContentHash,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaState {
    /// Reserved with `/create`; content may be uploaded until `expires_ts`.
    Pending { expires_ts: Millis },
    Ready {
        content: Content,
        uploaded_ts: Millis,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRecord {
    pub mxc: Mxc,
    pub uploader: Option<UserId>,
    pub created_ts: Millis,
    pub last_access_ts: Millis,
    /// Only reachable through the authenticated endpoints (legacy freeze).
    pub authenticated: bool,
    /// Width and height of the (oriented) image, once probed.
    pub image_size: Option<(u32, u32)>,
    pub state: MediaState,
}

/// A stored thumbnail, keyed by the request it answers. Its blob may be the original
/// content itself, where that already fits the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailRecord {
    pub spec: ThumbnailSpec,
    pub animated: bool,
    /// Size of the served image.
    pub width: u32,
    pub height: u32,
    pub content: ThumbnailContent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailContent {
    pub content_type: ContentType,
    pub size: u64,
    pub sha256: ContentHash,
}

/// A new media item with its content already stored.
#[derive(Debug, Clone)]
pub struct NewMedia {
    pub mxc: Mxc,
    pub uploader: Option<UserId>,
    pub content: Content,
    pub now: Millis,
    pub authenticated: bool,
}

/// A new reservation for an async upload.
#[derive(Debug, Clone)]
pub struct NewPending {
    pub mxc: Mxc,
    pub uploader: UserId,
    pub now: Millis,
    pub expires_ts: Millis,
    pub authenticated: bool,
}

/// The media id is taken already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyExists;

#[async_trait]
pub trait MediaRepo: Send + Sync + 'static {
    /// Apply pending migrations.
    async fn migrate(&self) -> Result<(), RepoError>;

    /// Record an uploaded media item.
    async fn insert_media(&self, media: &NewMedia) -> Result<Result<(), AlreadyExists>, RepoError>;

    /// Reserve a media id for an async upload, unless the uploader already holds
    /// `max_pending` unexpired reservations. Returns false when the limit is reached.
    async fn create_pending(
        &self,
        pending: &NewPending,
        max_pending: u32,
    ) -> Result<bool, RepoError>;

    /// Attach content to a pending media item. Returns false if the item is unknown or
    /// has content already (a concurrent upload won).
    async fn finish_pending(
        &self,
        mxc: &Mxc,
        content: &Content,
        now: Millis,
    ) -> Result<bool, RepoError>;

    async fn get_media(&self, mxc: &Mxc) -> Result<Option<MediaRecord>, RepoError>;

    /// Record an access (for cache eviction and retention).
    async fn touch_media(&self, mxc: &Mxc, now: Millis) -> Result<(), RepoError>;

    /// Record an access to a media item's thumbnails (for the eviction of remote
    /// thumbnails whose original is not cached), unless one was recorded since `since`.
    async fn touch_thumbnails(
        &self,
        mxc: &Mxc,
        now: Millis,
        since: Millis,
    ) -> Result<(), RepoError>;

    /// Record the probed size of an image.
    async fn set_image_size(&self, mxc: &Mxc, width: u32, height: u32) -> Result<(), RepoError>;

    /// Store a thumbnail; a row for the same request already there is kept.
    async fn insert_thumbnail(
        &self,
        mxc: &Mxc,
        thumbnail: &ThumbnailRecord,
        now: Millis,
    ) -> Result<(), RepoError>;

    /// Every stored thumbnail of a media item.
    async fn list_thumbnails(&self, mxc: &Mxc) -> Result<Vec<ThumbnailRecord>, RepoError>;

    /// Take the lease on thumbnail `work` for `mxc` until `expires`, unless another
    /// holder has an unexpired one. Returns whether `holder` now has it.
    async fn try_lease(
        &self,
        mxc: &Mxc,
        work: &str,
        holder: &str,
        now: Millis,
        expires: Millis,
    ) -> Result<bool, RepoError>;

    /// Give up a lease `holder` has (nothing happens if it has not).
    async fn release_lease(&self, mxc: &Mxc, work: &str, holder: &str) -> Result<(), RepoError>;

    /// Whether anyone holds an unexpired lease on `work` for `mxc`.
    async fn lease_held(&self, mxc: &Mxc, work: &str, now: Millis) -> Result<bool, RepoError>;

    /// Whether any metadata row (media or thumbnail) refers to this blob.
    async fn is_blob_referenced(&self, hash: &ContentHash) -> Result<bool, RepoError>;

    /// Total size of cached remote media (media of servers other than `local`) and their
    /// thumbnails.
    async fn remote_cache_bytes(&self, local: &ServerName) -> Result<u64, RepoError>;

    /// Up to `limit` cached remote media items with their sizes (thumbnails included),
    /// least recently accessed first; an item may be thumbnails alone.
    async fn least_recent_remote(
        &self,
        local: &ServerName,
        limit: u32,
    ) -> Result<Vec<(Mxc, u64)>, RepoError>;

    /// Delete a media item and its thumbnails' rows (their blobs are left to the
    /// sweeper). Returns whether there was any.
    async fn delete_media(&self, mxc: &Mxc) -> Result<bool, RepoError>;

    /// Delete reservations whose upload deadline passed before `before`.
    async fn delete_expired_pending(&self, before: Millis) -> Result<u64, RepoError>;

    /// A cheap round trip, for health checks.
    async fn ping(&self) -> Result<(), RepoError>;
}

/// Connect to the database named by `url` (`sqlite:` or `postgres:`), creating a
/// SQLite file if needed. Migrations are not applied here.
pub async fn connect(url: &str, max_connections: u32) -> Result<Arc<dyn MediaRepo>, RepoError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteRepo::connect(url, max_connections).await?))
    } else {
        Ok(Arc::new(PgRepo::connect(url, max_connections).await?))
    }
}
