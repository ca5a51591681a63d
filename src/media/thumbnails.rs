//! Thumbnails: served from what is stored, pre-generated after uploads, generated on
//! demand otherwise. Decoding runs on blocking threads behind a semaphore sized to the
//! CPU; each source is decoded at most once at a time (single-flight).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::pool::{JobError, JobPool};
use super::single_flight::{Flights, Role};
use super::{Access, MediaError, MediaService, ReadyMedia, now_ms};
use crate::db::{ThumbnailContent, ThumbnailRecord};
use crate::domain::{ContentType, Method, Mxc, Plan, ThumbnailSpec};
use crate::thumbnail::{self, Limits, Rendered, ThumbnailError};
use bytes::Bytes;
use futures_util::TryStreamExt;
use moka::future::Cache;

/// Thumbnail settings, as the media service needs them.
#[derive(Debug, Clone)]
pub struct ThumbnailOptions {
    /// Generated for every uploaded image.
    pub sizes: Vec<ThumbnailSpec>,
    /// Generate other sizes on demand.
    pub dynamic: bool,
    pub limits: Limits,
    pub max_source_bytes: u64,
    /// Decodes running at once (0 = one per CPU core).
    pub workers: usize,
    /// MiB of estimated decode memory all jobs together may hold (0 = 64 per worker).
    pub memory_mib: u32,
    /// Longest time one source may take to thumbnail.
    pub job_timeout: Duration,
    pub failure_ttl: Duration,
}

/// What a flight is about: the pre-generated set of a media item, or one size of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FlightKey {
    Set(Mxc),
    One(Mxc, ThumbnailSpec),
    Animated(Mxc, ThumbnailSpec),
}

impl FlightKey {
    fn mxc(&self) -> &Mxc {
        match self {
            Self::Set(m) | Self::One(m, _) | Self::Animated(m, _) => m,
        }
    }

    /// The name of this work in the shared lease table (see `Leased`).
    fn work(&self) -> String {
        match self {
            Self::Set(_) => SET_WORK.to_owned(),
            Self::One(_, spec) => spec.to_string(),
            Self::Animated(_, spec) => format!("animated {spec}"),
        }
    }
}

/// The lease name of pre-generating the configured sizes.
const SET_WORK: &str = "set";

/// How often a process waiting for another one's thumbnail work looks again.
const LEASE_POLL: Duration = Duration::from_millis(250);

/// Work leased in the database, so that processes sharing it do each piece once (thumbnails,
/// remote fetches). Given
/// back when dropped (from a spawned task, as drop cannot wait); a process that dies
/// holding one leaves it to expire.
pub(super) struct Leased {
    service: MediaService,
    mxc: Mxc,
    work: String,
}

impl Drop for Leased {
    fn drop(&mut self) {
        // Outside a runtime (it is shutting down) the lease is left to expire.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (service, mxc, work) = (self.service.clone(), self.mxc.clone(), self.work.clone());
        runtime.spawn(async move {
            let holder = &service.thumbs.holder;
            if let Err(e) = service.repo.release_lease(&mxc, &work, holder).await {
                tracing::warn!(%mxc, %work, error = %e, "cannot release thumbnail lease");
            }
        });
    }
}

pub(super) struct Thumbnailer {
    options: ThumbnailOptions,
    /// This process, in the lease table.
    holder: String,
    /// Thumbnail jobs (decodes) this process has run.
    jobs_run: AtomicU64,
    pool: JobPool,
    flights: Flights<FlightKey>,
    /// Files that failed recently, so retries do not burn CPU.
    failures: Cache<Mxc, ThumbnailError>,
    /// Media for which no animated thumbnail can be made (still images, too many frames).
    not_animated: Cache<Mxc, ()>,
}

impl Thumbnailer {
    pub(super) fn new(options: ThumbnailOptions) -> Self {
        Self {
            holder: uuid::Uuid::new_v4().to_string(),
            jobs_run: AtomicU64::new(0),
            pool: JobPool::new(options.workers, options.memory_mib),
            flights: Flights::default(),
            not_animated: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(options.failure_ttl)
                .build(),
            failures: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(options.failure_ttl)
                .build(),
            options,
        }
    }
}

/// A thumbnail ready to be served.
#[derive(Debug, Clone)]
pub struct ServedThumbnail {
    pub content: ThumbnailContent,
    pub width: u32,
    pub height: u32,
}

impl From<ThumbnailRecord> for ServedThumbnail {
    fn from(r: ThumbnailRecord) -> Self {
        Self {
            content: r.content,
            width: r.width,
            height: r.height,
        }
    }
}

impl MediaService {
    /// A thumbnail of `mxc` for `spec` (never upscaled, never smaller than asked unless
    /// the original is), waiting up to `wait` for content that is not uploaded yet.
    /// With `animated`, an animated source gets an animated thumbnail; anything else a
    /// still one.
    pub async fn thumbnail(
        &self,
        mxc: &Mxc,
        spec: ThumbnailSpec,
        animated: bool,
        access: Access,
        wait: Duration,
    ) -> Result<ServedThumbnail, MediaError> {
        if mxc.server_name != self.server_name
            && let Some(found) = self.remote_thumbnail(mxc, spec, animated, access).await?
        {
            return Ok(found);
        }
        let mut ready = self.fetch(mxc, access, wait).await?;
        let t = &self.thumbs;
        if let Some(error) = t.failures.get(mxc).await {
            return Err(error.into());
        }
        if animated && !t.not_animated.contains_key(mxc) {
            if let Some(found) = self.animated_thumbnail(&ready, spec).await? {
                return Ok(found);
            }
            t.not_animated.insert(mxc.clone(), ()).await;
        }
        // Pre-generation of this media may be under way: its result is what we want.
        if let Some(pending) = t.flights.in_flight(&FlightKey::Set(mxc.clone())) {
            pending.wait().await;
        }
        loop {
            if ready.record.image_size.is_none() {
                // Another task or process may have probed it meanwhile.
                if let Some(fresh) = self.repo.get_media(mxc).await? {
                    ready.record.image_size = fresh.image_size;
                }
            }
            if let Some(found) = self.stored_thumbnail(&ready, spec).await? {
                return Ok(found);
            }
            if let Some(error) = t.failures.get(mxc).await {
                return Err(error.into());
            }
            // Another process may be pre-generating this media: wait for its result.
            if self.repo.lease_held(mxc, SET_WORK, now_ms()).await? {
                self.wait_for_lease(mxc, SET_WORK).await?;
                continue;
            }
            let specs = if t.options.dynamic {
                vec![spec]
            } else {
                t.options.sizes.clone()
            };
            let key = if t.options.dynamic {
                FlightKey::One(mxc.clone(), spec)
            } else {
                FlightKey::Set(mxc.clone())
            };
            match t.flights.join(key.clone()) {
                Role::Leader(_guard) => {
                    let Some(_leased) = self.lease(&key).await? else {
                        // Another process is making it: wait, then look again.
                        self.wait_for_lease(mxc, &key.work()).await?;
                        continue;
                    };
                    ready.record.image_size = Some(self.generate(&ready, &specs).await?);
                    if let Some(found) = self.stored_thumbnail(&ready, spec).await? {
                        return Ok(found);
                    }
                    // Generated, yet nothing fits (the set cannot answer this request).
                    return self.original_as_thumbnail(&ready).await;
                }
                Role::Follower(f) => f.wait().await,
            }
        }
    }

    /// A stored or freshly made animated thumbnail, or None for a still source.
    async fn animated_thumbnail(
        &self,
        ready: &ReadyMedia,
        spec: ThumbnailSpec,
    ) -> Result<Option<ServedThumbnail>, MediaError> {
        let mxc = &ready.record.mxc;
        loop {
            let stored = self.repo.list_thumbnails(mxc).await?;
            if let Some(found) = stored.into_iter().find(|t| t.animated && t.spec == spec) {
                return Ok(Some(found.into()));
            }
            let key = FlightKey::Animated(mxc.clone(), spec);
            match self.thumbs.flights.join(key.clone()) {
                Role::Leader(_guard) => {
                    let Some(_leased) = self.lease(&key).await? else {
                        self.wait_for_lease(mxc, &key.work()).await?;
                        continue;
                    };
                    return self.generate_animated(ready, spec).await;
                }
                Role::Follower(f) => {
                    f.wait().await;
                    if self.thumbs.not_animated.contains_key(mxc) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Generate the configured sizes for new media in the background (after an upload).
    pub(super) fn spawn_pregeneration(&self, mxc: Mxc) {
        if self.thumbs.options.sizes.is_empty() {
            return;
        }
        let service = self.clone();
        tokio::spawn(async move {
            let key = FlightKey::Set(mxc.clone());
            let Role::Leader(_guard) = service.thumbs.flights.join(key.clone()) else {
                return;
            };
            let _leased = match service.lease(&key).await {
                Ok(Some(leased)) => leased,
                // Another process is on it.
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(%mxc, error = %e, "cannot lease thumbnail work");
                    return;
                }
            };
            let ready = match service.repo.get_media(&mxc).await {
                Ok(Some(record)) => match record.state.clone() {
                    crate::db::MediaState::Ready { content, .. } => ReadyMedia { record, content },
                    crate::db::MediaState::Pending { .. } => return,
                },
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(%mxc, error = %e, "cannot load media for thumbnails");
                    return;
                }
            };
            let sizes = service.thumbs.options.sizes.clone();
            match service.generate(&ready, &sizes).await {
                Ok(_) | Err(MediaError::NotThumbnailable) => {}
                Err(e) => tracing::warn!(%mxc, error = %e, "pre-generating thumbnails failed"),
            }
        });
    }

    /// The best stored answer for `spec`, if there is one.
    async fn stored_thumbnail(
        &self,
        ready: &ReadyMedia,
        spec: ThumbnailSpec,
    ) -> Result<Option<ServedThumbnail>, MediaError> {
        let stored = self.repo.list_thumbnails(&ready.record.mxc).await?;
        if let Some(exact) = stored.iter().find(|t| t.spec == spec && !t.animated) {
            return Ok(Some(exact.clone().into()));
        }
        let Some((w, h)) = ready.record.image_size else {
            return Ok(None);
        };
        let (tw, th) = match spec.plan(w, h) {
            Plan::Original => (w, h),
            Plan::Resize { width, height, .. } => (width, height),
        };
        // The smallest stored thumbnail that is at least as large as asked, of the same
        // kind: for crop, the same aspect ratio.
        let fits = |t: &&ThumbnailRecord| {
            !t.animated
                && t.width >= tw
                && t.height >= th
                && match spec.method {
                    Method::Scale => {
                        t.spec.method == Method::Scale || (t.width, t.height) == (w, h)
                    }
                    Method::Crop => {
                        u64::from(t.width) * u64::from(th) == u64::from(t.height) * u64::from(tw)
                    }
                }
        };
        let best = stored
            .iter()
            .filter(fits)
            .min_by_key(|t| u64::from(t.width) * u64::from(t.height));
        if best.is_some() || self.thumbs.options.dynamic {
            return Ok(best.cloned().map(Into::into));
        }
        // Sizes are fixed and none is large enough: the original is never too small.
        Ok(stored
            .into_iter()
            .find(|t| (t.width, t.height) == (w, h))
            .map(Into::into))
    }

    /// Serve the original image itself, as its sniffed image type; where browsers cannot
    /// show that type, the largest stored thumbnail.
    async fn original_as_thumbnail(
        &self,
        ready: &ReadyMedia,
    ) -> Result<ServedThumbnail, MediaError> {
        let (w, h) = ready
            .record
            .image_size
            .ok_or(MediaError::NotThumbnailable)?;
        let head_len = ready.content.size.min(64);
        let mut head = Vec::new();
        let mut stream = self
            .open(&ready.content.sha256, ready.content.size, Some(0..head_len))
            .await?;
        while let Some(chunk) = stream.try_next().await? {
            head.extend_from_slice(&chunk);
        }
        if let Some(mime) = thumbnail::sniff(&head).and_then(thumbnail::web_mime) {
            let content_type = ContentType::parse(mime).expect("image MIME types are valid");
            let content = ThumbnailContent {
                content_type,
                size: ready.content.size,
                sha256: ready.content.sha256,
            };
            return Ok(ServedThumbnail {
                content,
                width: w,
                height: h,
            });
        }
        let stored = self.repo.list_thumbnails(&ready.record.mxc).await?;
        stored
            .into_iter()
            .filter(|t| !t.animated)
            .max_by_key(|t| u64::from(t.width) * u64::from(t.height))
            .map(Into::into)
            .ok_or(MediaError::NotThumbnailable)
    }

    /// Thumbnail jobs (decodes) this process has run, for tests and operators.
    pub fn thumbnail_jobs_run(&self) -> u64 {
        self.thumbs.jobs_run.load(Ordering::Relaxed)
    }

    /// Lease `key`'s work for this process, or None if another process holds it. The
    /// lease outlives the job's time limit by a margin; past that, others take over.
    async fn lease(&self, key: &FlightKey) -> Result<Option<Leased>, MediaError> {
        let ttl = self.thumbs.options.job_timeout.saturating_mul(2) + Duration::from_secs(30);
        self.lease_work(key.mxc(), key.work(), ttl).await
    }

    pub(super) fn thumbnail_limits(&self) -> crate::thumbnail::Limits {
        self.thumbs.options.limits
    }

    /// Lease `work` on `mxc` for `ttl`, or None if another process holds it.
    pub(super) async fn lease_work(
        &self,
        mxc: &Mxc,
        work: String,
        ttl: Duration,
    ) -> Result<Option<Leased>, MediaError> {
        let now = now_ms();
        let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let ours = self
            .repo
            .try_lease(mxc, &work, &self.thumbs.holder, now, expires)
            .await?;
        Ok(ours.then(|| Leased {
            service: self.clone(),
            mxc: mxc.clone(),
            work,
        }))
    }

    /// Wait until no process holds a lease on `work` (it finished, or its lease expired).
    pub(super) async fn wait_for_lease(&self, mxc: &Mxc, work: &str) -> Result<(), MediaError> {
        while self.repo.lease_held(mxc, work, now_ms()).await? {
            tokio::time::sleep(LEASE_POLL).await;
        }
        Ok(())
    }

    /// Run `job` on the source's bytes on a blocking thread, once a worker is free and
    /// the memory `estimate` says it needs fits the budget, within the time limit.
    async fn run_job<T: Send + 'static>(
        &self,
        ready: &ReadyMedia,
        estimate: impl FnOnce(&[u8]) -> Result<u64, ThumbnailError> + Send + 'static,
        job: impl FnOnce(&[u8]) -> Result<T, ThumbnailError> + Send + 'static,
    ) -> Result<Result<T, ThumbnailError>, MediaError> {
        let t = &self.thumbs;
        if ready.content.size > t.options.max_source_bytes {
            return Err(MediaError::ThumbnailTooLarge);
        }
        // The source is read under the worker slot, so sources in memory are bounded too.
        let slot = t.pool.slot().await;
        let data = self.read_all(ready).await?;
        t.jobs_run.fetch_add(1, Ordering::Relaxed);
        match slot.run(data, t.options.job_timeout, estimate, job).await {
            Ok(done) => Ok(Ok(done)),
            Err(JobError::Failed(error)) => Ok(Err(error)),
            Err(JobError::TimedOut) => Ok(Err(ThumbnailError::TimedOut)),
            Err(JobError::Crashed(e)) => Err(MediaError::Internal(format!("thumbnail {e}"))),
        }
    }

    /// Decode the source once and store a thumbnail row for every spec. Returns the
    /// image's (oriented) size.
    async fn generate(
        &self,
        ready: &ReadyMedia,
        specs: &[ThumbnailSpec],
    ) -> Result<(u32, u32), MediaError> {
        let mxc = &ready.record.mxc;
        let limits = self.thumbs.options.limits;
        let job_specs = specs.to_vec();
        let estimate_specs = specs.to_vec();
        let result = self
            .run_job(
                ready,
                move |data| thumbnail::memory_estimate(data, &estimate_specs, &limits),
                move |data| thumbnail::render_all(data, &job_specs, &limits),
            )
            .await?;
        let (probe, rendered) = match result {
            Ok(ok) => ok,
            Err(error) => {
                tracing::info!(%mxc, %error, "cannot thumbnail");
                self.thumbs
                    .failures
                    .insert(mxc.clone(), error.clone())
                    .await;
                return Err(error.into());
            }
        };
        self.repo
            .set_image_size(mxc, probe.width, probe.height)
            .await?;
        let original = original_content(ready, probe.format);
        let now = now_ms();
        for (spec, out) in specs.iter().zip(rendered) {
            let (content, width, height) = match out {
                Rendered::Original => (original.clone(), probe.width, probe.height),
                Rendered::Thumbnail(th) => self.store_blob(th).await?,
            };
            let record = ThumbnailRecord {
                spec: *spec,
                animated: false,
                width,
                height,
                content,
            };
            self.repo.insert_thumbnail(mxc, &record, now).await?;
        }
        Ok((probe.width, probe.height))
    }

    /// Make and store an animated thumbnail. None when the source is not animated (or
    /// cannot be animated within the limits): the caller serves a still one.
    async fn generate_animated(
        &self,
        ready: &ReadyMedia,
        spec: ThumbnailSpec,
    ) -> Result<Option<ServedThumbnail>, MediaError> {
        let mxc = &ready.record.mxc;
        let limits = self.thumbs.options.limits;
        let result = self
            .run_job(
                ready,
                move |data| thumbnail::animated_memory_estimate(data, &limits),
                move |data| {
                    let format = thumbnail::probe(data, &limits)?.format;
                    Ok(thumbnail::render_animated(data, spec, &limits)?.map(|r| (r, format)))
                },
            )
            .await?;
        let (rendered, format) = match result {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            Err(error) => {
                tracing::info!(%mxc, %error, "no animated thumbnail; serving a still one");
                return Ok(None);
            }
        };
        let (content, width, height) = match rendered {
            Rendered::Thumbnail(th) => self.store_blob(th).await?,
            Rendered::Original => {
                let (w, h) = ready.record.image_size.unwrap_or((spec.width, spec.height));
                (original_content(ready, format), w, h)
            }
        };
        let record = ThumbnailRecord {
            spec,
            animated: true,
            width,
            height,
            content,
        };
        self.repo.insert_thumbnail(mxc, &record, now_ms()).await?;
        Ok(Some(record.into()))
    }

    /// Store an encoded thumbnail as a blob.
    async fn store_blob(
        &self,
        th: thumbnail::Thumbnail,
    ) -> Result<(ThumbnailContent, u32, u32), MediaError> {
        let size = th.bytes.len() as u64;
        let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(th.bytes))]);
        let blob = self
            .blobs
            .put_stream(body, size)
            .await
            .map_err(|e| match e {
                crate::storage::PutError::Storage(e) => MediaError::Storage(e),
                other => MediaError::Internal(other.to_string()),
            })?;
        let content_type =
            ContentType::parse(th.content_type).expect("thumbnail MIME types are valid");
        Ok((
            ThumbnailContent {
                content_type,
                size,
                sha256: blob.hash,
            },
            th.width,
            th.height,
        ))
    }

    /// The whole content of a media item, for decoding (bounded by the caller).
    async fn read_all(&self, ready: &ReadyMedia) -> Result<Vec<u8>, MediaError> {
        let mut stream = self
            .open(&ready.content.sha256, ready.content.size, None)
            .await?;
        let mut data = Vec::with_capacity(usize::try_from(ready.content.size).unwrap_or(0));
        while let Some(chunk) = stream.try_next().await? {
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    }
}

/// The original content, labelled with its real (sniffed) image type.
fn original_content(ready: &ReadyMedia, format: image::ImageFormat) -> ThumbnailContent {
    ThumbnailContent {
        content_type: ContentType::parse(format.to_mime_type())
            .expect("image MIME types are valid"),
        size: ready.content.size,
        sha256: ready.content.sha256,
    }
}

impl From<ThumbnailError> for MediaError {
    fn from(e: ThumbnailError) -> Self {
        match e {
            ThumbnailError::Unsupported | ThumbnailError::Decode(_) => MediaError::NotThumbnailable,
            ThumbnailError::TooLarge { .. } | ThumbnailError::TimedOut => {
                MediaError::ThumbnailTooLarge
            }
            ThumbnailError::Encode(detail) => MediaError::Internal(detail),
        }
    }
}

pub(super) type SharedThumbnailer = Arc<Thumbnailer>;
