//! Blob layer: content-addressed objects in any `object_store` backend (local disk, S3).
//!
//! Uploads stream to a staging key while their SHA-256 is computed, then move to
//! `blobs/<aa>/<bb>/<sha256>`. Keys are derived from hashes and random ids only,
//! never from user input.

mod keys;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
};
use sha2::{Digest, Sha256};

use crate::config::{StorageBackend, StorageSettings};
use crate::domain::ContentHash;

pub use keys::{blob_key, staging_key};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob not found")]
    NotFound,
    #[error("storage backend error")]
    Backend(#[source] object_store::Error),
    #[error("reading a local blob failed")]
    Io(#[source] std::io::Error),
    #[error("storage configuration error: {0}")]
    Config(String),
}

impl From<object_store::Error> for StorageError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => Self::NotFound,
            other => Self::Backend(other),
        }
    }
}

/// Why streaming content into the store failed.
#[derive(Debug, thiserror::Error)]
pub enum PutError<E> {
    #[error("content exceeds {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("reading the content failed")]
    Source(#[source] E),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A blob that was stored: its hash and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBlob {
    pub hash: ContentHash,
    pub size: u64,
}

/// An object listed by [`BlobStore::list_blobs`] or [`BlobStore::list_staging`].
#[derive(Debug, Clone)]
pub struct Listed {
    pub location: Path,
    pub age: Duration,
}

/// Bodies smaller than this go up in one request; larger ones as a multipart upload
/// with parts of this size (S3 wants at least 5 MiB per part).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one upload in flight at once.
const PART_CONCURRENCY: usize = 2;

#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// A blob already present but older than this is re-written on dedup, so the
    /// sweeper's grace period also covers blobs that new media just started to use.
    refresh_after: Duration,
}

impl BlobStore {
    pub fn new(store: Arc<dyn ObjectStore>, orphan_grace: Duration) -> Self {
        Self {
            store,
            refresh_after: orphan_grace / 2,
        }
    }

    pub fn from_settings(
        s: &StorageSettings,
        orphan_grace: Duration,
    ) -> Result<Self, StorageError> {
        let store: Arc<dyn ObjectStore> = match s.backend {
            StorageBackend::Filesystem => {
                std::fs::create_dir_all(&s.path).map_err(|e| {
                    StorageError::Config(format!(
                        "cannot create storage.path {}: {e}",
                        s.path.display()
                    ))
                })?;
                let fs = LocalFileSystem::new_with_prefix(&s.path)
                    .map_err(|e| StorageError::Config(format!("storage.path: {e}")))?;
                Arc::new(fs)
            }
            StorageBackend::S3 => {
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(s.bucket.clone().unwrap_or_default())
                    .with_region(&s.region)
                    .with_allow_http(s.allow_http)
                    .with_virtual_hosted_style_request(s.virtual_hosted_style);
                if let Some(endpoint) = &s.endpoint {
                    b = b.with_endpoint(endpoint);
                }
                if let Some(id) = &s.access_key_id {
                    b = b.with_access_key_id(id);
                }
                if let Some(secret) = &s.secret_access_key {
                    b = b.with_secret_access_key(secret.expose());
                }
                Arc::new(
                    b.build()
                        .map_err(|e| StorageError::Config(format!("storage (s3): {e}")))?,
                )
            }
        };
        let prefix = s.prefix.trim_matches('/');
        let store = if prefix.is_empty() {
            store
        } else {
            Arc::new(PrefixStore::new(store, prefix)) as Arc<dyn ObjectStore>
        };
        Ok(Self::new(store, orphan_grace))
    }

    /// Stream `body` into the store, at most `limit` bytes, hashing it on the way.
    /// Nothing is left behind when this fails (the staging object is removed).
    pub async fn put_stream<S, E>(&self, body: S, limit: u64) -> Result<StoredBlob, PutError<E>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let staging = staging_key();
        let result = self.stage(&staging, body, limit).await;
        let blob = match result {
            Ok(blob) => blob,
            Err(e) => {
                // Best effort: the sweeper removes staging objects this misses.
                let _ = self.store.delete(&staging).await;
                return Err(e);
            }
        };
        if let Err(e) = self.promote(&staging, &blob.hash).await {
            let _ = self.store.delete(&staging).await;
            return Err(e.into());
        }
        Ok(blob)
    }

    async fn stage<S, E>(
        &self,
        staging: &Path,
        mut body: S,
        limit: u64,
    ) -> Result<StoredBlob, PutError<E>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut head = BytesMut::new();
        let mut multipart: Option<WriteMultipart> = None;

        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    abort(multipart).await;
                    return Err(PutError::Source(e));
                }
            };
            size += chunk.len() as u64;
            if size > limit {
                abort(multipart).await;
                return Err(PutError::TooLarge { limit });
            }
            hasher.update(&chunk);
            match multipart.as_mut() {
                Some(upload) => {
                    if let Err(e) = upload.wait_for_capacity(PART_CONCURRENCY).await {
                        abort(multipart).await;
                        return Err(StorageError::from(e).into());
                    }
                    upload.put(chunk);
                }
                None => {
                    head.extend_from_slice(&chunk);
                    if head.len() >= PART_SIZE {
                        let upload = self
                            .store
                            .put_multipart(staging)
                            .await
                            .map_err(StorageError::from)?;
                        let mut upload = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                        upload.put(head.split().freeze());
                        multipart = Some(upload);
                    }
                }
            }
        }

        match multipart {
            Some(upload) => {
                upload.finish().await.map_err(StorageError::from)?;
            }
            None => {
                self.store
                    .put(staging, PutPayload::from(head.freeze()))
                    .await
                    .map_err(StorageError::from)?;
            }
        }
        Ok(StoredBlob {
            hash: ContentHash::from_bytes(hasher.finalize().into()),
            size,
        })
    }

    /// Move a staged object to its content address. Identical content is kept once.
    async fn promote(&self, staging: &Path, hash: &ContentHash) -> Result<(), StorageError> {
        let target = blob_key(hash);
        match self.store.head(&target).await {
            Ok(meta) if age_of(meta.last_modified) < self.refresh_after => {
                self.store.delete(staging).await?;
                Ok(())
            }
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {
                self.store.rename(staging, &target).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Read a blob, or the given byte range of it, as a stream.
    pub async fn get(
        &self,
        hash: &ContentHash,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let result = self.store.get_opts(&blob_key(hash), options).await?;
        match result.payload {
            // object_store reads local files 8 KiB at a time, one blocking task each;
            // larger reads make local downloads several times faster.
            GetResultPayload::File(file, _) => Ok(file_stream(file, result.range)),
            GetResultPayload::Stream(stream) => Ok(stream.map_err(StorageError::from).boxed()),
        }
    }

    /// Age of a blob, or None if it does not exist.
    pub async fn blob_age(&self, hash: &ContentHash) -> Result<Option<Duration>, StorageError> {
        match self.store.head(&blob_key(hash)).await {
            Ok(meta) => Ok(Some(age_of(meta.last_modified))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_blob(&self, hash: &ContentHash) -> Result<(), StorageError> {
        match self.store.delete(&blob_key(hash)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_location(&self, location: &Path) -> Result<(), StorageError> {
        match self.store.delete(location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every content blob, with its hash and age.
    pub fn list_blobs(&self) -> BoxStream<'static, Result<(ContentHash, Duration), StorageError>> {
        self.store
            .list(Some(&Path::from(keys::BLOB_PREFIX)))
            .map_err(StorageError::from)
            .try_filter_map(|meta| async move {
                let hash = meta
                    .location
                    .filename()
                    .and_then(|f| ContentHash::from_hex(f).ok());
                Ok(hash.map(|h| (h, age_of(meta.last_modified))))
            })
            .boxed()
    }

    /// Every staging object (uploads in flight or abandoned), with its age.
    pub fn list_staging(&self) -> BoxStream<'static, Result<Listed, StorageError>> {
        self.store
            .list(Some(&Path::from(keys::STAGING_PREFIX)))
            .map_err(StorageError::from)
            .map_ok(|meta| Listed {
                age: age_of(meta.last_modified),
                location: meta.location,
            })
            .boxed()
    }

    /// The underlying object store, for tools and tests that need to see raw objects.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Check the backend is reachable.
    pub async fn check(&self) -> Result<(), StorageError> {
        match self.store.head(&Path::from("mxcd-health-check")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Bytes per read when streaming a local file.
const FILE_CHUNK: u64 = 256 * 1024;

/// Stream `range` of a local file, reading on the blocking pool.
fn file_stream(
    file: std::fs::File,
    range: Range<u64>,
) -> BoxStream<'static, Result<Bytes, StorageError>> {
    use std::io::{Read, Seek, SeekFrom};
    let state = (file, range.start, range.end, false);
    futures_util::stream::try_unfold(state, |(mut file, pos, end, seeked)| async move {
        if pos >= end {
            return Ok(None);
        }
        let read = tokio::task::spawn_blocking(move || {
            if !seeked {
                file.seek(SeekFrom::Start(pos))?;
            }
            let want = (end - pos).min(FILE_CHUNK);
            let mut buf = Vec::with_capacity(want as usize);
            (&mut file).take(want).read_to_end(&mut buf)?;
            Ok::<_, std::io::Error>((file, buf))
        })
        .await
        .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
        .map_err(StorageError::Io)?;
        let (file, buf) = read;
        if buf.is_empty() {
            // The file is shorter than its metadata says: report it rather than hang.
            return Err(StorageError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "blob is shorter than expected",
            )));
        }
        let next = pos + buf.len() as u64;
        Ok(Some((Bytes::from(buf), (file, next, end, true))))
    })
    .boxed()
}

async fn abort(upload: Option<WriteMultipart>) {
    if let Some(upload) = upload {
        let _ = upload.abort().await;
    }
}

fn age_of(t: chrono::DateTime<chrono::Utc>) -> Duration {
    (chrono::Utc::now() - t).to_std().unwrap_or_default()
}
