//! The SQL implementation shared by both backends. The statements are written once;
//! [`impl_media_repo!`] instantiates the trait for each pool type.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{
    AlreadyExists, Content, MediaRecord, MediaRepo, MediaState, Millis, NewMedia, NewPending,
    RepoError, ThumbnailContent, ThumbnailRecord,
};
use crate::domain::{
    ContentHash, ContentType, FileName, MediaId, Method, Mxc, ServerName, ThumbnailSpec, UserId,
};

const INSERT_MEDIA: &str = "INSERT INTO media (server_name, media_id, uploader, content_type, filename, \
     size_bytes, sha256, created_ts, uploaded_ts, expires_ts, last_access_ts, authenticated) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, NULL, $8, $9) \
     ON CONFLICT (server_name, media_id) DO NOTHING";

const CREATE_PENDING: &str = "INSERT INTO media (server_name, media_id, uploader, created_ts, \
     expires_ts, last_access_ts, authenticated) \
     SELECT $1, $2, $3, $4, $5, $4, $6 \
     WHERE (SELECT COUNT(*) FROM media WHERE uploader = $3 AND sha256 IS NULL AND expires_ts > $4) < $7 \
     ON CONFLICT (server_name, media_id) DO NOTHING";

const FINISH_PENDING: &str = "UPDATE media SET content_type = $1, filename = $2, size_bytes = $3, \
     sha256 = $4, uploaded_ts = $5, expires_ts = NULL, last_access_ts = $5 \
     WHERE server_name = $6 AND media_id = $7 AND sha256 IS NULL";

const GET_MEDIA: &str = "SELECT server_name, media_id, uploader, content_type, filename, size_bytes, \
     sha256, created_ts, uploaded_ts, expires_ts, last_access_ts, authenticated, image_width, image_height \
     FROM media WHERE server_name = $1 AND media_id = $2";

const TOUCH_MEDIA: &str = "UPDATE media SET last_access_ts = $1 WHERE server_name = $2 AND media_id = $3 AND last_access_ts < $1";

const TOUCH_THUMBNAILS: &str = "UPDATE thumbnails SET last_access_ts = $1 \
     WHERE server_name = $2 AND media_id = $3 AND last_access_ts < $4";

const BLOB_REFERENCED: &str = "SELECT EXISTS (SELECT 1 FROM media WHERE sha256 = $1) \
     OR EXISTS (SELECT 1 FROM thumbnails WHERE sha256 = $1)";

const SET_IMAGE_SIZE: &str =
    "UPDATE media SET image_width = $1, image_height = $2 WHERE server_name = $3 AND media_id = $4";

const INSERT_THUMBNAIL: &str = "INSERT INTO thumbnails (server_name, media_id, req_width, req_height, method, \
     animated, width, height, content_type, size_bytes, sha256, created_ts, last_access_ts) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
     ON CONFLICT (server_name, media_id, req_width, req_height, method, animated) DO NOTHING";

const LIST_THUMBNAILS: &str = "SELECT req_width, req_height, method, animated, width, height, content_type, \
     size_bytes, sha256 FROM thumbnails WHERE server_name = $1 AND media_id = $2 \
     ORDER BY width, height, req_width, req_height, method, animated";

const TRY_LEASE: &str = "INSERT INTO thumbnail_leases (server_name, media_id, work, holder, expires_ts) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (server_name, media_id, work) DO UPDATE \
     SET holder = excluded.holder, expires_ts = excluded.expires_ts \
     WHERE thumbnail_leases.expires_ts < $6";

const RELEASE_LEASE: &str = "DELETE FROM thumbnail_leases \
     WHERE server_name = $1 AND media_id = $2 AND work = $3 AND holder = $4";

const LEASE_HELD: &str = "SELECT COUNT(*) FROM thumbnail_leases \
     WHERE server_name = $1 AND media_id = $2 AND work = $3 AND expires_ts >= $4";

/// Cached remote content: complete remote media, and thumbnails of remote media other
/// than the original itself (those fetched from the origin included, whose original
/// may not be cached at all). `$1` is our own server name.
macro_rules! remote_cached {
    () => {
        "SELECT server_name, media_id, size_bytes, last_access_ts FROM media \
     WHERE server_name <> $1 AND sha256 IS NOT NULL \
     UNION ALL \
     SELECT t.server_name, t.media_id, t.size_bytes, t.last_access_ts FROM thumbnails t \
     WHERE t.server_name <> $1 AND NOT EXISTS (SELECT 1 FROM media m \
     WHERE m.server_name = t.server_name AND m.media_id = t.media_id AND m.sha256 = t.sha256)"
    };
}

const REMOTE_CACHE_BYTES: &str = concat!(
    "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM (",
    remote_cached!(),
    ") AS cached"
);

/// Remote media items (an original with its thumbnails, or thumbnails alone) by the
/// last access to any of them.
const LEAST_RECENT_REMOTE: &str = concat!(
    "SELECT server_name, media_id, CAST(SUM(size_bytes) AS BIGINT), \
     MAX(last_access_ts) AS accessed FROM (",
    remote_cached!(),
    ") AS cached GROUP BY server_name, media_id ORDER BY accessed, server_name, media_id LIMIT $2"
);

const DELETE_THUMBNAILS: &str = "DELETE FROM thumbnails WHERE server_name = $1 AND media_id = $2";

const DELETE_MEDIA: &str = "DELETE FROM media WHERE server_name = $1 AND media_id = $2";

const DELETE_EXPIRED_PENDING: &str = "DELETE FROM media WHERE sha256 IS NULL AND expires_ts < $1";

#[derive(sqlx::FromRow)]
struct MediaRow {
    server_name: String,
    media_id: String,
    uploader: Option<String>,
    content_type: Option<String>,
    filename: Option<String>,
    size_bytes: Option<i64>,
    sha256: Option<String>,
    created_ts: i64,
    uploaded_ts: Option<i64>,
    expires_ts: Option<i64>,
    last_access_ts: i64,
    authenticated: bool,
    image_width: Option<i64>,
    image_height: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct ThumbnailRow {
    req_width: i64,
    req_height: i64,
    method: String,
    animated: bool,
    width: i64,
    height: i64,
    content_type: String,
    size_bytes: i64,
    sha256: String,
}

impl TryFrom<ThumbnailRow> for ThumbnailRecord {
    type Error = RepoError;

    fn try_from(r: ThumbnailRow) -> Result<Self, RepoError> {
        let corrupt = |what| {
            RepoError::Corrupt(
                format!("thumbnail {}x{} {}", r.req_width, r.req_height, r.method),
                what,
            )
        };
        let dim = |v: i64, what| u32::try_from(v).map_err(|_| corrupt(what));
        let spec = ThumbnailSpec::new(
            dim(r.req_width, "req_width")?,
            dim(r.req_height, "req_height")?,
            Method::parse(&r.method).map_err(|_| corrupt("method"))?,
        )
        .map_err(|_| corrupt("req_width"))?;
        let content = ThumbnailContent {
            content_type: ContentType::parse(&r.content_type)
                .map_err(|_| corrupt("content_type"))?,
            size: u64::try_from(r.size_bytes).map_err(|_| corrupt("size_bytes"))?,
            sha256: ContentHash::from_hex(&r.sha256).map_err(|_| corrupt("sha256"))?,
        };
        Ok(ThumbnailRecord {
            spec,
            animated: r.animated,
            width: dim(r.width, "width")?,
            height: dim(r.height, "height")?,
            content,
        })
    }
}

impl TryFrom<MediaRow> for MediaRecord {
    type Error = RepoError;

    fn try_from(r: MediaRow) -> Result<Self, RepoError> {
        let key = format!("{}/{}", r.server_name, r.media_id);
        let corrupt = |what| RepoError::Corrupt(key.clone(), what);
        let mxc = Mxc::new(
            ServerName::parse(&r.server_name).map_err(|_| corrupt("server_name"))?,
            MediaId::parse(&r.media_id).map_err(|_| corrupt("media_id"))?,
        );
        let uploader = r
            .uploader
            .as_deref()
            .map(UserId::parse)
            .transpose()
            .map_err(|_| corrupt("uploader"))?;
        let state = match (r.sha256, r.uploaded_ts) {
            (Some(hash), Some(uploaded_ts)) => {
                let content_type = r.content_type.ok_or_else(|| corrupt("content_type"))?;
                let content = Content {
                    content_type: ContentType::parse(&content_type)
                        .map_err(|_| corrupt("content_type"))?,
                    filename: r
                        .filename
                        .as_deref()
                        .map(FileName::parse)
                        .transpose()
                        .map_err(|_| corrupt("filename"))?,
                    size: r
                        .size_bytes
                        .and_then(|s| u64::try_from(s).ok())
                        .ok_or_else(|| corrupt("size_bytes"))?,
                    sha256: ContentHash::from_hex(&hash).map_err(|_| corrupt("sha256"))?,
                };
                MediaState::Ready {
                    content,
                    uploaded_ts,
                }
            }
            (None, _) => MediaState::Pending {
                expires_ts: r.expires_ts.ok_or_else(|| corrupt("expires_ts"))?,
            },
            (Some(_), None) => return Err(corrupt("uploaded_ts")),
        };
        let image_size = match (r.image_width, r.image_height) {
            (Some(w), Some(h)) => Some((
                u32::try_from(w).map_err(|_| corrupt("image_width"))?,
                u32::try_from(h).map_err(|_| corrupt("image_height"))?,
            )),
            _ => None,
        };
        Ok(MediaRecord {
            image_size,
            mxc,
            uploader,
            created_ts: r.created_ts,
            last_access_ts: r.last_access_ts,
            authenticated: r.authenticated,
            state,
        })
    }
}

fn size_to_db(size: u64) -> i64 {
    // Sizes are bounded by max_upload_bytes long before i64::MAX.
    i64::try_from(size).unwrap_or(i64::MAX)
}

macro_rules! impl_media_repo {
    ($repo:ty) => {
        #[async_trait]
        impl MediaRepo for $repo {
            async fn migrate(&self) -> Result<(), RepoError> {
                Self::MIGRATOR.run(&self.pool).await?;
                Ok(())
            }

            async fn insert_media(
                &self,
                m: &NewMedia,
            ) -> Result<Result<(), AlreadyExists>, RepoError> {
                let done = sqlx::query(INSERT_MEDIA)
                    .bind(m.mxc.server_name.as_str())
                    .bind(m.mxc.media_id.as_str())
                    .bind(m.uploader.as_ref().map(UserId::as_str))
                    .bind(m.content.content_type.as_str())
                    .bind(m.content.filename.as_ref().map(FileName::as_str))
                    .bind(size_to_db(m.content.size))
                    .bind(m.content.sha256.to_hex())
                    .bind(m.now)
                    .bind(m.authenticated)
                    .execute(&self.pool)
                    .await?;
                Ok(if done.rows_affected() == 1 {
                    Ok(())
                } else {
                    Err(AlreadyExists)
                })
            }

            async fn create_pending(
                &self,
                p: &NewPending,
                max_pending: u32,
            ) -> Result<bool, RepoError> {
                let done = sqlx::query(CREATE_PENDING)
                    .bind(p.mxc.server_name.as_str())
                    .bind(p.mxc.media_id.as_str())
                    .bind(p.uploader.as_str())
                    .bind(p.now)
                    .bind(p.expires_ts)
                    .bind(p.authenticated)
                    .bind(i64::from(max_pending))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn finish_pending(
                &self,
                mxc: &Mxc,
                c: &Content,
                now: Millis,
            ) -> Result<bool, RepoError> {
                let done = sqlx::query(FINISH_PENDING)
                    .bind(c.content_type.as_str())
                    .bind(c.filename.as_ref().map(FileName::as_str))
                    .bind(size_to_db(c.size))
                    .bind(c.sha256.to_hex())
                    .bind(now)
                    .bind(mxc.server_name.as_str())
                    .bind(mxc.media_id.as_str())
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn get_media(&self, mxc: &Mxc) -> Result<Option<MediaRecord>, RepoError> {
                let row: Option<MediaRow> = sqlx::query_as(GET_MEDIA)
                    .bind(mxc.server_name.as_str())
                    .bind(mxc.media_id.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(MediaRecord::try_from).transpose()
            }

            async fn touch_media(&self, mxc: &Mxc, now: Millis) -> Result<(), RepoError> {
                sqlx::query(TOUCH_MEDIA)
                    .bind(now)
                    .bind(mxc.server_name.as_str())
                    .bind(mxc.media_id.as_str())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn touch_thumbnails(
                &self,
                mxc: &Mxc,
                now: Millis,
                since: Millis,
            ) -> Result<(), RepoError> {
                sqlx::query(TOUCH_THUMBNAILS)
                    .bind(now)
                    .bind(mxc.server_name.as_str())
                    .bind(mxc.media_id.as_str())
                    .bind(since)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn set_image_size(
                &self,
                mxc: &Mxc,
                width: u32,
                height: u32,
            ) -> Result<(), RepoError> {
                sqlx::query(SET_IMAGE_SIZE)
                    .bind(i64::from(width))
                    .bind(i64::from(height))
                    .bind(mxc.server_name.as_str())
                    .bind(mxc.media_id.as_str())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn insert_thumbnail(
                &self,
                mxc: &Mxc,
                t: &ThumbnailRecord,
                now: Millis,
            ) -> Result<(), RepoError> {
                sqlx::query(INSERT_THUMBNAIL)
                    .bind(mxc.server_name.as_str())
                    .bind(mxc.media_id.as_str())
                    .bind(i64::from(t.spec.width))
                    .bind(i64::from(t.spec.height))
                    .bind(t.spec.method.as_str())
                    .bind(t.animated)
                    .bind(i64::from(t.width))
                    .bind(i64::from(t.height))
                    .bind(t.content.content_type.as_str())
                    .bind(size_to_db(t.content.size))
                    .bind(t.content.sha256.to_hex())
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list_thumbnails(&self, mxc: &Mxc) -> Result<Vec<ThumbnailRecord>, RepoError> {
                let rows: Vec<ThumbnailRow> = sqlx::query_as(LIST_THUMBNAILS)
                    .bind(mxc.server_name.as_str())
                    .bind(mxc.media_id.as_str())
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(ThumbnailRecord::try_from).collect()
            }

            async fn is_blob_referenced(&self, hash: &ContentHash) -> Result<bool, RepoError> {
                let found: bool = sqlx::query_scalar(BLOB_REFERENCED)
                    .bind(hash.to_hex())
                    .fetch_one(&self.pool)
                    .await?;
                Ok(found)
            }

            async fn try_lease(
                &self,
                mxc: &Mxc,
                work: &str,
                holder: &str,
                now: Millis,
                expires: Millis,
            ) -> Result<bool, RepoError> {
                let done = sqlx::query(TRY_LEASE)
                    .bind(mxc.server_name.as_str())
                    .bind(mxc.media_id.as_str())
                    .bind(work)
                    .bind(holder)
                    .bind(expires)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn release_lease(
                &self,
                mxc: &Mxc,
                work: &str,
                holder: &str,
            ) -> Result<(), RepoError> {
                sqlx::query(RELEASE_LEASE)
                    .bind(mxc.server_name.as_str())
                    .bind(mxc.media_id.as_str())
                    .bind(work)
                    .bind(holder)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn lease_held(
                &self,
                mxc: &Mxc,
                work: &str,
                now: Millis,
            ) -> Result<bool, RepoError> {
                let (n,): (i64,) = sqlx::query_as(LEASE_HELD)
                    .bind(mxc.server_name.as_str())
                    .bind(mxc.media_id.as_str())
                    .bind(work)
                    .bind(now)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n > 0)
            }

            async fn remote_cache_bytes(&self, local: &ServerName) -> Result<u64, RepoError> {
                let (n,): (i64,) = sqlx::query_as(REMOTE_CACHE_BYTES)
                    .bind(local.as_str())
                    .fetch_one(&self.pool)
                    .await?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            async fn least_recent_remote(
                &self,
                local: &ServerName,
                limit: u32,
            ) -> Result<Vec<(Mxc, u64)>, RepoError> {
                let rows: Vec<(String, String, Option<i64>, i64)> =
                    sqlx::query_as(LEAST_RECENT_REMOTE)
                        .bind(local.as_str())
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter()
                    .map(|(server, id, size, _accessed)| {
                        let corrupt =
                            |what| RepoError::Corrupt(format!("media {server}/{id}"), what);
                        let mxc = Mxc::new(
                            ServerName::parse(&server).map_err(|_| corrupt("server name"))?,
                            MediaId::parse(&id).map_err(|_| corrupt("media id"))?,
                        );
                        Ok((mxc, size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0)))
                    })
                    .collect()
            }

            async fn delete_media(&self, mxc: &Mxc) -> Result<bool, RepoError> {
                let mut tx = self.pool.begin().await?;
                let thumbnails = sqlx::query(DELETE_THUMBNAILS)
                    .bind(mxc.server_name.as_str())
                    .bind(mxc.media_id.as_str())
                    .execute(&mut *tx)
                    .await?;
                let media = sqlx::query(DELETE_MEDIA)
                    .bind(mxc.server_name.as_str())
                    .bind(mxc.media_id.as_str())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(thumbnails.rows_affected() + media.rows_affected() > 0)
            }

            async fn delete_expired_pending(&self, before: Millis) -> Result<u64, RepoError> {
                let done = sqlx::query(DELETE_EXPIRED_PENDING)
                    .bind(before)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn ping(&self) -> Result<(), RepoError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}

/// The embedded default: one SQLite file in WAL mode.
pub struct SqliteRepo {
    pool: SqlitePool,
}

impl SqliteRepo {
    const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, RepoError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| RepoError::Database(sqlx::Error::Io(e)))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }
}

impl_media_repo!(SqliteRepo);

/// The production backend, shared by any number of mxcd processes.
pub struct PgRepo {
    pool: PgPool,
}

impl PgRepo {
    const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, RepoError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Self { pool })
    }
}

impl_media_repo!(PgRepo);
