//! The quarantine file: every line that carried telemetry but could not be used, and every
//! point the database refused, is kept with its reason in `quarantine.log` in the storage
//! dir (invariant 5). The file is bounded: past [`MAX_BYTES`] it is rotated to
//! `quarantine.log.1` (one generation kept). The warning log is rate-limited here too.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// File name inside the storage dir.
pub const FILE: &str = "quarantine.log";
/// Size at which the file is rotated.
pub const MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Longest part of an offending line kept in the file.
const MAX_KEPT_LINE: usize = 4096;
/// At most one warning per this interval; the others are counted in it.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Shared handle to the quarantine file.
#[derive(Clone, Debug)]
pub struct Quarantine {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_bytes: u64,
    total: u64,
    last_warn: Option<Instant>,
    suppressed: u64,
}

impl Quarantine {
    /// The quarantine file in `dir` (opened lazily, on the first entry).
    pub fn new(dir: &Path) -> Self {
        Self::with_limit(dir, MAX_BYTES)
    }

    fn with_limit(dir: &Path, max_bytes: u64) -> Self {
        let path = dir.join(FILE);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Quarantine {
            inner: Arc::new(Mutex::new(Inner {
                path,
                file: None,
                size,
                max_bytes,
                total: 0,
                last_warn: None,
                suppressed: 0,
            })),
        }
    }

    /// Keeps `line` with `reason`; `origin` says who refused it (`decode`, `influxdb`).
    pub fn add(&self, origin: &str, reason: &str, line: &str) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.total += 1;
        let kept = cut(line, MAX_KEPT_LINE);
        let entry = format!(
            "{}\t{origin}\t{}\t{}\n",
            humantime::format_rfc3339_millis(std::time::SystemTime::now()),
            one_line(reason),
            one_line(kept)
        );
        if let Err(error) = inner.write(entry.as_bytes()) {
            tracing::error!(%error, path = %inner.path.display(), "cannot write quarantine file");
        }
        let now = Instant::now();
        if inner
            .last_warn
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
        {
            let suppressed = std::mem::take(&mut inner.suppressed);
            inner.last_warn = Some(now);
            tracing::warn!(origin, reason, suppressed, file = %inner.path.display(), "telemetry quarantined");
        } else {
            inner.suppressed += 1;
        }
    }

    /// Entries added since start.
    pub fn total(&self) -> u64 {
        self.inner.lock().map(|i| i.total).unwrap_or(0)
    }
}

impl Inner {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.size + bytes.len() as u64 > self.max_bytes && self.size > 0 {
            self.file = None;
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            std::fs::rename(&self.path, rotated)?;
            self.size = 0;
        }
        if self.file.is_none() {
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        if let Some(file) = self.file.as_mut() {
            file.write_all(bytes)?;
            self.size += bytes.len() as u64;
        }
        Ok(())
    }
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Tabs and newlines would break the one-entry-per-line format.
fn one_line(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace('\t', "\\t")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_reason_and_line_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::new(dir.path());
        q.add("decode", "invalid JSON", "JSON sent via VCP: {\n\t");
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.lines().count(), 1);
        let fields: Vec<_> = text.trim_end().split('\t').collect();
        assert_eq!(
            fields[1..],
            ["decode", "invalid JSON", "JSON sent via VCP: {\\n\\t"]
        );
        assert_eq!(q.total(), 1);
    }

    #[test]
    fn the_file_is_bounded_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::with_limit(dir.path(), 1000);
        for _ in 0..100 {
            q.add("decode", "bad", &"x".repeat(100));
        }
        let size = std::fs::metadata(dir.path().join(FILE)).unwrap().len();
        assert!(size <= 1000, "{size}");
        assert!(dir.path().join("quarantine.log.1").exists());
    }
}
