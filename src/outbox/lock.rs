//! One gateway per storage dir: an exclusive `flock` on `outbox.lock` in the dir, taken when
//! the writer opens the outbox and held as long as it lives. The kernel releases it when the
//! process ends, a crash or SIGKILL included, so a stale lock never blocks a restart. The file
//! holds the holder's PID, for the message a second gateway gets.
//!
//! `flock` locks belong to an open file, not a thread or a process's other descriptors, so two
//! opens in one process conflict too (unlike `fcntl` locks, which SQLite uses for its own
//! bookkeeping and which this lock does not touch).

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

/// The lock file's name in the storage dir.
pub const LOCK_FILE: &str = "outbox.lock";

/// Attempts at the lock, [`LOCK_RETRY`] apart, before another holder is reported.
const LOCK_TRIES: u32 = 10;
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// Held: the storage dir is this process's.
#[derive(Debug)]
pub(crate) struct DirLock {
    file: File,
}

impl Drop for DirLock {
    /// Clears the PID before the lock goes with the file (a crash leaves it, and the next
    /// holder overwrites it).
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub(crate) enum LockError {
    /// Another process holds it; its PID when the file says.
    Held(Option<u32>),
    /// The lock file cannot be opened or locked.
    Io(std::io::Error),
}

impl DirLock {
    /// Takes the lock of `dir` (which must exist), or says who holds it.
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(LockError::Io)?;
        // A `check` looking (a shared lock for an instant) must not turn a start away: try
        // for a moment before saying who holds it.
        let mut tries = 0;
        // SAFETY: flock on a descriptor we own; no memory involved.
        while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(LockError::Io(error));
            }
            tries += 1;
            if tries >= LOCK_TRIES {
                return Err(LockError::Held(read_pid(&mut file)));
            }
            std::thread::sleep(LOCK_RETRY);
        }
        file.set_len(0).map_err(LockError::Io)?;
        file.rewind().map_err(LockError::Io)?;
        writeln!(file, "{}", std::process::id()).map_err(LockError::Io)?;
        Ok(DirLock { file })
    }
}

/// The PID holding `dir`'s lock, if a live process holds it (`check` reports it).
pub(crate) fn holder(dir: &Path) -> Option<u32> {
    let path: PathBuf = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new().read(true).open(path).ok()?;
    // SAFETY: flock on a descriptor we own.
    let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
    if free {
        // SAFETY: releases the shared lock just taken.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        return None;
    }
    read_pid(&mut file)
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path()), None);
        let first = DirLock::acquire(dir.path()).unwrap();
        match DirLock::acquire(dir.path()) {
            Err(LockError::Held(pid)) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        assert_eq!(holder(dir.path()), Some(std::process::id()));
        drop(first);
        assert_eq!(holder(dir.path()), None);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(),
            "",
            "PID cleared"
        );
        let _again = DirLock::acquire(dir.path()).unwrap();
    }
}
