//! `[http]` and `[log]`: the dashboard/API server (on unless `enabled = false`), its listen
//! address, `/readyz` threshold and bearer token; and the interval of the log's summary
//! lines (`"0s"`: none).

use std::time::Duration;

use super::super::defaults;
use super::super::raw::{RawHttp, RawLog};
use super::super::{ConfigError, HttpConfig};
use super::Validator;

impl Validator<'_> {
    /// `[http]`: the server's settings, or `None` when it is off.
    pub(super) fn http(&self, h: RawHttp) -> Result<Option<HttpConfig>, ConfigError> {
        if !h.enabled.unwrap_or(defaults::HTTP_ENABLED) {
            return Ok(None);
        }
        let listen = h
            .listen
            .unwrap_or_else(|| defaults::HTTP_LISTEN.to_string());
        let ready_max_backlog_age = h
            .ready_max_backlog_age
            .unwrap_or(defaults::READY_MAX_BACKLOG_AGE);
        if ready_max_backlog_age.is_zero() {
            return Err(self.err("[http] ready_max_backlog_age", "must be more than 0s"));
        }
        let token = self.secret(h.token, h.token_file, "HTTP_TOKEN", "[http] token_file")?;
        if token
            .as_ref()
            .is_some_and(|t| t.expose().len() < defaults::MIN_HTTP_TOKEN_LEN)
        {
            return Err(self.err(
                "[http] token",
                format!(
                    "must be at least {} characters",
                    defaults::MIN_HTTP_TOKEN_LEN
                ),
            ));
        }
        Ok(Some(HttpConfig {
            listen: self.socket_addr("[http] listen", &listen)?,
            ready_max_backlog_age,
            token,
            protect_metrics: h.protect_metrics.unwrap_or(defaults::PROTECT_METRICS),
        }))
    }

    /// `[log] summary_interval`; `None` for `"0s"` (no summary lines).
    /// `[downlink]`.
    pub(super) fn downlink(
        &self,
        d: super::super::raw::RawDownlink,
    ) -> Result<crate::config::DownlinkConfig, ConfigError> {
        let expire_after = self.at_least_duration(
            "[downlink] expire_after",
            d.expire_after.unwrap_or(defaults::COMMAND_EXPIRE_AFTER),
            defaults::MIN_COMMAND_EXPIRE_AFTER,
        )?;
        Ok(crate::config::DownlinkConfig { expire_after })
    }

    pub(super) fn summary_interval(&self, l: RawLog) -> Option<Duration> {
        let interval = l.summary_interval.unwrap_or(defaults::SUMMARY_INTERVAL);
        (!interval.is_zero()).then_some(interval)
    }
}
