//! Where CPU-heavy image work runs: on blocking threads, at most `workers` jobs at once,
//! and only while the memory each job needs (estimated from the image's headers before
//! it is decoded) fits a shared budget (see `budget` for who goes first). A job that
//! needs more than the whole budget runs alone. The server's thumbnailer and
//! `mxcd bench` both schedule through this, so the benchmark measures what production
//! does.
//!
//! A job first takes an intake place (twice as many as workers), under which its input
//! is read and its memory estimated; then memory; then a worker. So a large job waiting
//! for memory does not keep a worker idle, and inputs held in memory stay bounded.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::budget::Budget;

const MIB: u64 = 1 << 20;

#[derive(Debug)]
pub struct JobPool {
    intake: Arc<Semaphore>,
    workers_free: Arc<Semaphore>,
    memory: Arc<Budget>,
    workers: usize,
}

/// An intake place: held while the job's input is read, its memory is waited for, and
/// it runs.
#[must_use]
pub struct Slot<'a> {
    pool: &'a JobPool,
    permit: OwnedSemaphorePermit,
}

/// What became of a job.
#[derive(Debug, thiserror::Error)]
pub enum JobError<E> {
    /// The estimate or the job itself failed.
    #[error(transparent)]
    Failed(E),
    /// The job ran past its time limit (it goes on until it ends, holding its slot and
    /// memory).
    #[error("job took too long")]
    TimedOut,
    /// The blocking task panicked or was cancelled.
    #[error("job task failed: {0}")]
    Crashed(String),
}

impl JobPool {
    /// `workers` 0 means one per CPU core; `budget_mib` 0 means 64 MiB per worker.
    pub fn new(workers: usize, budget_mib: u32) -> Self {
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            workers
        };
        let budget_mib = if budget_mib == 0 {
            u32::try_from(workers * 64).unwrap_or(u32::MAX)
        } else {
            budget_mib
        };
        Self {
            intake: Arc::new(Semaphore::new(workers * 2)),
            workers_free: Arc::new(Semaphore::new(workers)),
            memory: Budget::new(budget_mib),
            workers,
        }
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    pub fn budget_mib(&self) -> u32 {
        self.memory.total()
    }

    /// Wait for an intake place.
    pub async fn slot(&self) -> Slot<'_> {
        let permit = self
            .intake
            .clone()
            .acquire_owned()
            .await
            .expect("the intake semaphore is never closed");
        Slot { pool: self, permit }
    }
}

/// Budget units (MiB, at least 1) for `bytes`; the budget caps asks at its size.
fn units(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(MIB))
        .unwrap_or(u32::MAX)
        .max(1)
}

impl Slot<'_> {
    /// Estimate the memory `job` needs with `estimate` (both run on blocking threads),
    /// wait until that much of the budget and a worker are free, then run `job`,
    /// waiting for it at most `limit` (the clock starts when the job does, not while it
    /// queues). The places, worker and memory move into the job, so a job past its
    /// limit still holds them until it really ends.
    pub async fn run<D, T, E>(
        self,
        input: D,
        limit: Duration,
        estimate: impl FnOnce(&[u8]) -> Result<u64, E> + Send + 'static,
        job: impl FnOnce(&[u8]) -> Result<T, E> + Send + 'static,
    ) -> Result<T, JobError<E>>
    where
        D: AsRef<[u8]> + Send + Sync + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let crashed = |e: tokio::task::JoinError| JobError::Crashed(e.to_string());
        let input = Arc::new(input);
        let estimated = {
            let input = input.clone();
            tokio::task::spawn_blocking(move || estimate(input.as_ref().as_ref()))
                .await
                .map_err(crashed)?
                .map_err(JobError::Failed)?
        };
        let units = units(estimated);
        tracing::debug!(
            estimated_mib = estimated.div_ceil(MIB),
            units,
            "job waits for memory"
        );
        let memory = self.pool.memory.reserve(units).await;
        let worker = self
            .pool
            .workers_free
            .clone()
            .acquire_owned()
            .await
            .expect("the worker semaphore is never closed");
        let intake = self.permit;
        let handle = tokio::task::spawn_blocking(move || {
            let result = job(input.as_ref().as_ref());
            drop((worker, memory, intake));
            result
        });
        tokio::time::timeout(limit, handle)
            .await
            .map_err(|_| JobError::TimedOut)?
            .map_err(crashed)?
            .map_err(JobError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Run jobs needing `mib` each on a pool and report the most that ran at once.
    async fn most_at_once(pool: JobPool, mib: &[u64]) -> u32 {
        let running = Arc::new(AtomicU32::new(0));
        let most = Arc::new(AtomicU32::new(0));
        let pool = Arc::new(pool);
        let mut tasks = Vec::new();
        for &m in mib {
            let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let slot = pool.slot().await;
                slot.run(
                    Vec::<u8>::new(),
                    Duration::from_secs(10),
                    move |_| Ok::<_, ()>(m * MIB),
                    move |_| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(30));
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    },
                )
                .await
                .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        most.load(Ordering::SeqCst)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_jobs_use_every_worker() {
        assert_eq!(most_at_once(JobPool::new(3, 100), &[10; 9]).await, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_that_do_not_fit_together_wait() {
        assert_eq!(most_at_once(JobPool::new(3, 100), &[60; 6]).await, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_over_the_whole_budget_runs_alone() {
        assert_eq!(
            most_at_once(JobPool::new(2, 100), &[500, 500, 500]).await,
            1
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_estimates_do_not_run_the_job() {
        let pool = JobPool::new(1, 10);
        let result = pool
            .slot()
            .await
            .run(
                Vec::<u8>::new(),
                Duration::from_secs(10),
                |_| Err::<u64, _>("bad header"),
                |_| -> Result<(), &str> { panic!("must not run") },
            )
            .await;
        assert!(matches!(
            result,
            Err(JobError::Failed::<&str>("bad header"))
        ));
        // The slot was given back.
        let _ = pool.slot().await;
    }

    /// Run a job that sleeps `ms` on `pool` with a time limit of `limit_ms`.
    async fn sleeper(pool: &JobPool, limit_ms: u64, ms: u64) -> Result<(), JobError<()>> {
        let slot = pool.slot().await;
        slot.run(
            Vec::<u8>::new(),
            Duration::from_millis(limit_ms),
            |_| Ok(MIB),
            move |_| {
                std::thread::sleep(Duration::from_millis(ms));
                Ok(())
            },
        )
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_time_limit_counts_from_the_start_of_the_job() {
        let pool = Arc::new(JobPool::new(1, 10));
        let first = {
            let pool = pool.clone();
            tokio::spawn(async move { sleeper(&pool, 10_000, 300).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Queued behind the first job for ~250 ms, then runs for 100 ms: within 200 ms.
        assert!(sleeper(&pool, 200, 100).await.is_ok());
        first.await.unwrap().unwrap();
        assert!(matches!(
            sleeper(&pool, 50, 300).await,
            Err(JobError::TimedOut)
        ));
    }
}
