//! `[influxdb]`: the write URL (credentials in it refused, they would be printed), the write
//! API with its credentials, TLS for `https://` URLs (no plaintext fallback: `ca_file` with
//! `http://` is an error), and the batching and retry settings.

use std::path::PathBuf;

use super::super::defaults;
use super::super::raw::{RawApi, RawInflux};
use super::super::tls::pem_certificates;
use super::super::{ConfigError, InfluxApi, InfluxConfig, InfluxTls};
use super::{positive, Validator};

impl Validator<'_> {
    /// `[influxdb]`, present: the InfluxDB sink runs.
    pub(super) fn influx(&self, i: RawInflux) -> Result<InfluxConfig, ConfigError> {
        let url = i.url.ok_or_else(|| {
            self.err("[influxdb] url", "required, e.g. \"http://127.0.0.1:8086\"")
        })?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(self.err(
                "[influxdb] url",
                format!("must start with http:// or https:// (got {url:?})"),
            ));
        }
        if url
            .split("://")
            .nth(1)
            .is_some_and(|rest| rest.split('/').next().is_some_and(|a| a.contains('@')))
        {
            return Err(self.err(
                "[influxdb] url",
                "credentials in the URL would be printed with it: use username/password (v1) or token (v2) instead",
            ));
        }
        let url = url.trim_end_matches('/').to_string();
        let tls = self.influx_tls(url.starts_with("https://"), i.ca_file)?;
        let api = match i.api.unwrap_or(defaults::INFLUX_API) {
            RawApi::V2 => InfluxApi::V2 {
                org: i.org.unwrap_or_else(|| defaults::INFLUX_ORG.to_string()),
                bucket: i
                    .bucket
                    .ok_or_else(|| self.err("[influxdb] bucket", "required for api = \"v2\""))?,
                token: self.secret(
                    i.token,
                    i.token_file,
                    "INFLUXDB_TOKEN",
                    "[influxdb] token_file",
                )?,
            },
            RawApi::V1 => InfluxApi::V1 {
                database: i
                    .database
                    .ok_or_else(|| self.err("[influxdb] database", "required for api = \"v1\""))?,
                username: i.username,
                password: self.secret(
                    i.password,
                    i.password_file,
                    "INFLUXDB_PASSWORD",
                    "[influxdb] password_file",
                )?,
            },
        };
        let precision = i.precision.unwrap_or(defaults::PRECISION);
        let batch_size = positive(i.batch_size.unwrap_or(defaults::BATCH_SIZE))
            .filter(|n| *n <= defaults::MAX_BATCH_SIZE)
            .ok_or_else(|| {
                self.err(
                    "[influxdb] batch_size",
                    format!("must be between 1 and {}", defaults::MAX_BATCH_SIZE),
                )
            })?;
        let timeout = self.at_least_duration(
            "[influxdb] timeout",
            i.timeout.unwrap_or(defaults::HTTP_TIMEOUT),
            defaults::MIN_HTTP_TIMEOUT,
        )?;
        Ok(InfluxConfig {
            url,
            api,
            tls,
            precision,
            batch_size,
            flush_interval: i.flush_interval.unwrap_or(defaults::FLUSH_INTERVAL),
            gzip: i.gzip.unwrap_or(defaults::GZIP),
            timeout,
            retry_initial: i.retry_initial.unwrap_or(defaults::RECONNECT_INITIAL),
            retry_max: i.retry_max.unwrap_or(defaults::RECONNECT_MAX),
        })
    }

    /// `https://` URLs get TLS (with `ca_file`'s CA when set); `ca_file` with `http://` is an
    /// error rather than a silent plaintext connection.
    fn influx_tls(
        &self,
        https: bool,
        ca_file: Option<PathBuf>,
    ) -> Result<Option<InfluxTls>, ConfigError> {
        if !https {
            if ca_file.is_some() {
                return Err(self.err(
                    "[influxdb] ca_file",
                    "is set but url is not https://; use https://host:8086 (there is no plaintext fallback)",
                ));
            }
            return Ok(None);
        }
        let ca_pem = match ca_file {
            Some(path) => {
                let pem = std::fs::read(&path).map_err(|e| {
                    self.err(
                        "[influxdb] ca_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                if pem_certificates(&pem) == 0 {
                    return Err(self.err("[influxdb] ca_file", "holds no PEM certificate"));
                }
                Some(pem)
            }
            None => None,
        };
        Ok(Some(InfluxTls { ca_pem }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::super::test_load as load;

    #[test]
    fn influx_ca_file_is_checked_and_needs_https() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("not-a-cert.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let with = |url: &str, ca: &Path| {
            load(&format!(
                "[influxdb]\nurl = \"{url}\"\nbucket = \"b\"\nca_file = {:?}\n",
                ca.display().to_string()
            ))
        };
        let e = with("https://db:8086", &not_pem).unwrap_err().to_string();
        assert!(
            e.contains("[influxdb] ca_file: holds no PEM certificate"),
            "{e}"
        );
        let e = with("https://db:8086", &dir.path().join("missing.crt"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[influxdb] ca_file: cannot read"), "{e}");
        let e = with("http://db:8086", &not_pem).unwrap_err().to_string();
        assert!(
            e.contains("[influxdb] ca_file: is set but url is not https://"),
            "{e}"
        );
        // https:// without ca_file: TLS with the built-in roots; http://: no TLS at all.
        let tls = |url: &str| {
            load(&format!("[influxdb]\nurl = \"{url}\"\nbucket = \"b\"\n"))
                .unwrap()
                .influx
                .unwrap()
                .tls
        };
        assert!(tls("https://db:8086").is_some_and(|t| t.ca_pem.is_none()));
        assert!(tls("http://db:8086").is_none());
    }
}
