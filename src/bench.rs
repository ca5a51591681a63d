//! `mxcd bench thumbnails DIR`: the production thumbnail pipeline (decode once, every
//! configured size, encode) over a directory of images, without HTTP or storage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;

use crate::domain::ThumbnailSpec;
use crate::media::pool::JobPool;
use crate::thumbnail::{self, Limits};

/// One image's result.
struct Sample {
    format: String,
    megapixels: f64,
    elapsed: Duration,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub format: String,
    pub images: usize,
    pub megapixels: f64,
    pub images_per_sec: f64,
    pub megapixels_per_sec: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub workers: usize,
    pub memory_budget_mib: u32,
    pub repeat: usize,
    pub sizes: Vec<String>,
    pub wall_secs: f64,
    pub rows: Vec<Row>,
    pub peak_rss_mib: Option<f64>,
    pub failures: Vec<(String, String)>,
}

/// Every regular file directly in `dir`, sorted by name.
pub fn images_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub specs: Vec<ThumbnailSpec>,
    /// Jobs at once (0 = one per CPU core).
    pub workers: usize,
    /// The memory budget, as the server's `thumbnails.memory_mib` (0 = 64 per worker).
    pub memory_mib: u32,
    pub repeat: usize,
    pub limits: Limits,
    pub job_timeout: Duration,
}

/// Thumbnail every file `repeat` times through the server's job pool (the same worker
/// slots, memory budget and blocking threads). Each job reads its file under its slot,
/// as the server does; only decode, resize and encode are timed. `on_done` is called
/// after every job (for a progress bar).
pub async fn run(files: &[PathBuf], options: &Options, on_done: &(dyn Fn() + Sync)) -> Report {
    let pool = JobPool::new(options.workers, options.memory_mib);
    let samples = Mutex::new(Vec::new());
    let failures = Mutex::new(BTreeMap::new());
    let started = Instant::now();
    let jobs = (0..options.repeat.max(1)).flat_map(|_| files.iter());
    futures_util::stream::iter(jobs)
        .for_each_concurrent(pool.workers(), |path| {
            let (pool, samples, failures) = (&pool, &samples, &failures);
            async move {
                let _done = Finished(on_done);
                let name = path.display().to_string();
                let slot = pool.slot().await;
                let data = match tokio::fs::read(path).await {
                    Ok(d) => d,
                    Err(e) => {
                        failures.lock().expect("lock").insert(name, e.to_string());
                        return;
                    }
                };
                let (specs, limits) = (options.specs.clone(), options.limits);
                let estimate_specs = specs.clone();
                let result = slot
                    .run(
                        data,
                        options.job_timeout,
                        move |data| thumbnail::memory_estimate(data, &estimate_specs, &limits),
                        move |data| {
                            let t = Instant::now();
                            thumbnail::render_all(data, &specs, &limits)
                                .map(|(probe, _)| (probe, t.elapsed()))
                        },
                    )
                    .await;
                match result {
                    Ok((probe, elapsed)) => samples.lock().expect("lock").push(Sample {
                        format: format!("{:?}", probe.format).to_uppercase(),
                        megapixels: f64::from(probe.width) * f64::from(probe.height) / 1e6,
                        elapsed,
                    }),
                    Err(e) => {
                        failures.lock().expect("lock").insert(name, e.to_string());
                    }
                }
            }
        })
        .await;
    let wall = started.elapsed();
    let samples = samples.into_inner().expect("lock");
    let mut by_format: BTreeMap<String, Vec<&Sample>> = BTreeMap::new();
    for s in &samples {
        by_format.entry(s.format.clone()).or_default().push(s);
    }
    let total: Vec<&Sample> = samples.iter().collect();
    let mut rows: Vec<Row> = by_format
        .into_iter()
        .map(|(f, s)| row(f, &s, None))
        .collect();
    rows.push(row("ALL".into(), &total, Some(wall)));
    Report {
        workers: pool.workers(),
        memory_budget_mib: pool.budget_mib(),
        repeat: options.repeat.max(1),
        sizes: options.specs.iter().map(ToString::to_string).collect(),
        wall_secs: wall.as_secs_f64(),
        rows,
        peak_rss_mib: peak_rss_mib(),
        failures: failures.into_inner().expect("lock").into_iter().collect(),
    }
}

/// Calls the progress callback when a job ends, however it ends.
struct Finished<'a>(&'a (dyn Fn() + Sync));

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// Per-format rows use the sum of per-image times (CPU time on one worker); the overall
/// row uses wall time, so it shows what the workers achieve together.
fn row(format: String, samples: &[&Sample], wall: Option<Duration>) -> Row {
    let mut ms: Vec<f64> = samples
        .iter()
        .map(|s| s.elapsed.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let secs = wall.map_or_else(|| ms.iter().sum::<f64>() / 1000.0, |w| w.as_secs_f64());
    let megapixels: f64 = samples.iter().map(|s| s.megapixels).sum();
    let pct = |p: f64| {
        if ms.is_empty() {
            0.0
        } else {
            ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1]
        }
    };
    Row {
        format,
        images: samples.len(),
        megapixels,
        images_per_sec: samples.len() as f64 / secs.max(1e-9),
        megapixels_per_sec: megapixels / secs.max(1e-9),
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
    }
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = format!(
            "sizes: {}\nworkers: {}, memory budget: {} MiB, repeat: {}, wall: {:.2} s\n\n{:<6} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            self.sizes.join(" "),
            self.workers,
            self.memory_budget_mib,
            self.repeat,
            self.wall_secs,
            "format",
            "images",
            "MP",
            "img/s",
            "MP/s",
            "p50 ms",
            "p95 ms",
            "p99 ms"
        );
        for r in &self.rows {
            out.push_str(&format!(
                "{:<6} {:>6} {:>9.1} {:>8.2} {:>8.1} {:>8.1} {:>8.1} {:>8.1}\n",
                r.format,
                r.images,
                r.megapixels,
                r.images_per_sec,
                r.megapixels_per_sec,
                r.p50_ms,
                r.p95_ms,
                r.p99_ms
            ));
        }
        if let Some(rss) = self.peak_rss_mib {
            out.push_str(&format!("\npeak RSS: {rss:.0} MiB\n"));
        }
        for (file, why) in &self.failures {
            out.push_str(&format!("failed: {file}: {why}\n"));
        }
        out
    }
}
