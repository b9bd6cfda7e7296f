//! `[storage]`: where the outbox lives (made absolute once, so every message and the default
//! MQTT client id name the same place), how hard it syncs, its disk budget and what happens
//! at the budget. `--move-corrupt-outbox`, a command-line setting only, lands here too.

use std::path::PathBuf;

use super::super::defaults;
use super::super::raw::RawStorage;
use super::super::{ConfigError, StorageConfig};
use super::{absolute, Validator};

/// The outbox directory `s` names (or the default), absolute: relative to the working
/// directory, made absolute once so every message names the same place.
pub(super) fn dir(s: &RawStorage) -> PathBuf {
    absolute(
        s.dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(defaults::STORAGE_DIR)),
    )
}

impl Validator<'_> {
    /// `[storage]`, its directory already resolved by [`dir`].
    pub(super) fn storage(
        &self,
        s: RawStorage,
        dir: PathBuf,
    ) -> Result<StorageConfig, ConfigError> {
        let sync = s.sync.unwrap_or(defaults::SYNC);
        let max_bytes = s.max_bytes.map_or(defaults::MAX_BYTES, |b| b.0);
        if max_bytes < defaults::MIN_BYTES {
            return Err(self.err(
                "[storage] max_bytes",
                format!("must be at least 1MiB (got {max_bytes} bytes)"),
            ));
        }
        let on_full = s.on_full.unwrap_or(defaults::ON_FULL);
        Ok(StorageConfig {
            dir,
            retention: s.retention.unwrap_or(defaults::RETENTION),
            sync,
            max_bytes,
            on_full,
            move_corrupt_aside: self.move_corrupt_aside,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::raw;
    use super::super::super::test_load as load;
    use super::super::super::FullPolicy;

    #[test]
    fn sizes_take_units() {
        let c = load("[storage]\nmax_bytes = \"512MiB\"\non_full = \"block\"\n").unwrap();
        assert_eq!(c.storage.max_bytes, 512 << 20);
        assert_eq!(c.storage.on_full, FullPolicy::Block);
        assert_eq!(
            load("[storage]\nmax_bytes = 2000000\n")
                .unwrap()
                .storage
                .max_bytes,
            2_000_000
        );
        assert_eq!(raw::parse_size("2GB").unwrap(), 2_000_000_000);
    }
}
