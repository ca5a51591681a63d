//! Removes what an interrupted or abandoned upload leaves behind. Safe to run in several
//! processes at once: every step is idempotent, and nothing younger than the grace
//! period is touched, so uploads in flight keep their staging objects and fresh blobs.

use std::time::Duration;

use futures_util::TryStreamExt;

use super::{MediaError, now_ms};
use crate::db::MediaRepo;
use crate::storage::BlobStore;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub expired_reservations: u64,
    pub staging_removed: u64,
    pub blobs_removed: u64,
}

pub(super) async fn sweep(
    repo: &dyn MediaRepo,
    blobs: &BlobStore,
    grace: Duration,
) -> Result<SweepReport, MediaError> {
    let mut report = SweepReport {
        expired_reservations: repo.delete_expired_pending(now_ms()).await?,
        ..Default::default()
    };

    let mut staging = blobs.list_staging();
    while let Some(item) = staging.try_next().await? {
        if item.age > grace {
            blobs.delete_location(&item.location).await?;
            report.staging_removed += 1;
        }
    }

    let mut listed = blobs.list_blobs();
    while let Some((hash, age)) = listed.try_next().await? {
        if age <= grace || repo.is_blob_referenced(&hash).await? {
            continue;
        }
        // An upload of identical content re-writes an old blob before its row is
        // inserted; re-reading the age right before deleting keeps such a blob.
        if blobs.blob_age(&hash).await?.is_some_and(|age| age > grace) {
            blobs.delete_blob(&hash).await?;
            report.blobs_removed += 1;
        }
    }
    Ok(report)
}
