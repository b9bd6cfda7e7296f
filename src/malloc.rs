//! How the C allocator (glibc's malloc) hands memory back. By default it keeps freed memory
//! resident and raises its thresholds after the first large buffer is freed: a gateway that
//! decodes a 480 KB line of 10,000 nodes every 10 s then keeps ~10 MB it does not use, and
//! every thread gets an arena of its own that holds freed memory too. Fixed thresholds give
//! large buffers straight back and trim the heap's free top; two arenas are plenty for the
//! few threads here. Freed memory between chunks still in use (a burst of small buffers, such
//! as the sinks' rows of a 30,000-reading line) stays resident until [`trim`], which the app
//! job of [`spawn`] calls [`TRIM_EVERY`] after a commit, at most once per [`TRIM_EVERY`]
//! (measured, see BENCHMARKS.md): a gateway that receives nothing is not woken for it. jemalloc and
//! mimalloc, which decay on their own, were measured against this and held more (BENCHMARKS.md,
//! "Allocators"). Other allocators: nothing to do.

use std::time::Duration;

/// Freed memory above this at the top of the heap goes back to the system; buffers at least
/// this large are mapped on their own and unmapped when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const THRESHOLD: libc::c_int = 128 * 1024;

/// Most malloc arenas (glibc's default is 8 per core).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// Sets the allocator's policy; call first thing in `main`, before any thread starts.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other
    // thread exists, and a refused setting (return 0) leaves glibc's default in place.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
    }
}

/// How long after a commit the app calls [`trim`], and the least time between two (0.1–0.8 ms
/// each on a 10 MB heap, measured). Not a divisor of the usual report intervals (10 s), so
/// trims do not all land just before the next burst.
pub const TRIM_EVERY: Duration = Duration::from_secs(3);

/// Hands the heap's free pages back to the system, wherever they are in it.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let start = std::time::Instant::now();
        // SAFETY: malloc_trim only releases free pages, under the allocator's own locks.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(
            released,
            micros = start.elapsed().as_micros(),
            "malloc_trim"
        );
    }
}

/// Starts the job that calls [`trim`] [`TRIM_EVERY`] after `committed` changed (whatever
/// else changed meanwhile is trimmed with it), on `tasks`, until `stop`.
pub fn spawn<T: Send + Sync + 'static>(
    tasks: &tokio_util::task::TaskTracker,
    mut committed: tokio::sync::watch::Receiver<T>,
    stop: tokio_util::sync::CancellationToken,
) {
    tasks.spawn(async move {
        loop {
            tokio::select! {
                changed = committed.changed() => if changed.is_err() { return },
                () = stop.cancelled() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(TRIM_EVERY) => trim(),
                () = stop.cancelled() => return,
            }
            committed.borrow_and_update();
        }
    });
}
