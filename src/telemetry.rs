//! Logging set-up.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Log to stderr; `RUST_LOG` overrides the default `info` level.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Make glibc's malloc give large buffers back to the system when they are freed.
///
/// Decoded images are tens of megabytes. By default glibc raises its mmap threshold to
/// the size of the largest block freed (up to 32 MiB), after which such buffers come
/// from per-thread heaps that keep their peak, so the resident size of a process that
/// thumbnails on several blocking threads grows to the sum of each thread's worst image.
/// A fixed 1 MiB threshold maps every large buffer on its own and unmaps it on free.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called once at start-up.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// `a: b: c` for an error and its sources (where reqwest and others put the useful
/// part), for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
