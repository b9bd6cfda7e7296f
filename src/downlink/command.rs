//! A command for a node, as users send it (`docs/API.md`, "Commands"): its JSON, the checks
//! that refuse a bad one before anything goes on the air, and the states it moves through.
//! Pure: no I/O.
//!
//! ```json
//! {"id": "c-42", "command": "interval", "value": "30s"}
//! ```

use std::time::Duration;

/// Shortest uplink interval a node is told to use.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest uplink interval a node is told to use.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// How long a node blinks for `identify` without a value.
pub const IDENTIFY_DEFAULT: Duration = Duration::from_secs(10);
/// Longest `identify`.
pub const MAX_IDENTIFY: Duration = Duration::from_secs(300);
/// Longest command id; ids are topic levels, so only letters, digits, `_`, `-` and `.`.
pub const MAX_ID_LEN: usize = 64;

/// What a node is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Report every this often from now on (kept by the node across resets).
    Interval(Duration),
    /// Answer with its info: firmware version, uptime, boot count, its counters.
    Ping,
    /// Blink the board's LED for this long.
    Identify(Duration),
    /// Restart.
    Reboot,
}

impl Command {
    /// The command's name, as in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Command::Interval(_) => "interval",
            Command::Ping => "ping",
            Command::Identify(_) => "identify",
            Command::Reboot => "reboot",
        }
    }

    /// The value as written back (`"30s"`), for the commands that have one.
    pub fn value(self) -> Option<String> {
        match self {
            Command::Interval(d) | Command::Identify(d) => {
                Some(humantime::format_duration(d).to_string())
            }
            Command::Ping | Command::Reboot => None,
        }
    }
}

/// Where a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Committed, waiting for the node's next uplink.
    Queued,
    /// Sent in the window after an uplink; sent again after the next one until confirmed.
    Sent,
    /// The node confirmed it (applied once).
    Confirmed,
    /// Not confirmed within `[downlink] expire_after`.
    Expired,
    /// Refused before anything went on the air (unknown command, bad value, unknown node).
    Rejected,
}

impl State {
    /// Every state, for counters that show each from the start.
    pub const ALL: [State; 5] = [
        State::Queued,
        State::Sent,
        State::Confirmed,
        State::Expired,
        State::Rejected,
    ];

    /// As in the JSON and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Sent => "sent",
            State::Confirmed => "confirmed",
            State::Expired => "expired",
            State::Rejected => "rejected",
        }
    }

    /// No state follows.
    pub fn is_final(self) -> bool {
        matches!(self, State::Confirmed | State::Expired | State::Rejected)
    }

    /// The state named `text`.
    pub fn parse(text: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A request as sent, checked: its id (the caller's, or `None`: one is made) and either the
/// command or why it is refused (a refused command still gets its id and a `rejected` state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The caller's id, when valid.
    pub id: Option<String>,
    /// The command's name as sent (for the state message of a refused one).
    pub name: String,
    /// The command, or why it is refused.
    pub command: Result<Command, String>,
}

/// Reads a request. `Err`: not even a request (not a JSON object, a bad id): nothing to
/// give a state to; the caller answers with the reason.
pub fn parse(body: &[u8]) -> Result<Request, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let serde_json::Value::Object(obj) = value else {
        return Err(
            "expected a JSON object like {\"command\": \"interval\", \"value\": \"30s\"}".into(),
        );
    };
    if let Some(key) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "id" | "command" | "value"))
    {
        return Err(format!(
            "{key:?} is not a field of a command (id, command, value)"
        ));
    }
    let id = match obj.get("id") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(id)) => Some(check_id(id)?),
        Some(other) => return Err(format!("id must be a string (got {other})")),
    };
    let name = match obj.get("command") {
        Some(serde_json::Value::String(name)) => name.clone(),
        Some(other) => return Err(format!("command must be a string (got {other})")),
        None => return Err("command is missing: interval, ping, identify or reboot".into()),
    };
    let value = match obj.get("value") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(v)) => Some(v.clone()),
        Some(serde_json::Value::Number(n)) => Some(format!("{n}s")),
        Some(other) => {
            return Ok(Request {
                id,
                command: Err(format!("value must be a string like \"30s\" (got {other})")),
                name,
            })
        }
    };
    let command = command(&name, value.as_deref());
    Ok(Request { id, name, command })
}

/// A caller's id: 1 to [`MAX_ID_LEN`] letters, digits, `_`, `-` and `.` (it is a topic level).
pub fn check_id(id: &str) -> Result<String, String> {
    let ok = (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(id.to_string())
    } else {
        Err(format!(
            "id must be 1 to {MAX_ID_LEN} letters, digits, _, - and . (got {id:?})"
        ))
    }
}

/// The command `name` with `value`, or why not.
pub fn command(name: &str, value: Option<&str>) -> Result<Command, String> {
    let duration = |v: &str, what: &str, min: Duration, max: Duration| {
        let d = humantime::parse_duration(v.trim())
            .map_err(|e| format!("{what}: {v:?} is not a duration like \"30s\" ({e})"))?;
        if d < min || d > max {
            return Err(format!(
                "{what} must be {} to {} (got {v:?})",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ));
        }
        Ok(d)
    };
    let none = |c: Command| match value {
        None => Ok(c),
        Some(v) => Err(format!("{name} takes no value (got {v:?})")),
    };
    match name {
        "interval" => match value {
            Some(v) => Ok(Command::Interval(duration(
                v,
                "interval",
                MIN_INTERVAL,
                MAX_INTERVAL,
            )?)),
            None => Err("interval needs a value, e.g. \"30s\"".into()),
        },
        "identify" => match value {
            Some(v) => Ok(Command::Identify(duration(
                v,
                "identify",
                Duration::from_secs(1),
                MAX_IDENTIFY,
            )?)),
            None => Ok(Command::Identify(IDENTIFY_DEFAULT)),
        },
        "ping" => none(Command::Ping),
        "reboot" => none(Command::Reboot),
        other => Err(format!(
            "unknown command {other:?}: interval, ping, identify or reboot"
        )),
    }
}

/// A command's state as published and listed: `{"id", "command", "value"?, "state", "at",
/// "detail"}`, `at` in RFC 3339 UTC.
pub fn state_json(
    id: &str,
    name: &str,
    value: Option<&str>,
    state: State,
    at_ns: i64,
    detail: &str,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": id,
        "command": name,
        "state": state.as_str(),
        "at": rfc3339(at_ns),
        "detail": detail,
    });
    if let (Some(value), Some(obj)) = (value, v.as_object_mut()) {
        obj.insert("value".into(), value.into());
    }
    v
}

/// `ns` since the epoch as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ns: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_requests_are_their_commands() {
        let r = parse(br#"{"id": "c-42", "command": "interval", "value": "30s"}"#).unwrap();
        assert_eq!(r.id.as_deref(), Some("c-42"));
        assert_eq!(r.command, Ok(Command::Interval(Duration::from_secs(30))));
        let r = parse(br#"{"command": "interval", "value": 5}"#).unwrap();
        assert_eq!(r.id, None);
        assert_eq!(r.command, Ok(Command::Interval(Duration::from_secs(5))));
        for (body, expected) in [
            (r#"{"command":"ping"}"#, Command::Ping),
            (r#"{"command":"reboot","value":null}"#, Command::Reboot),
            (
                r#"{"command":"identify"}"#,
                Command::Identify(IDENTIFY_DEFAULT),
            ),
            (
                r#"{"command":"identify","value":"1m"}"#,
                Command::Identify(Duration::from_secs(60)),
            ),
        ] {
            assert_eq!(
                parse(body.as_bytes()).unwrap().command,
                Ok(expected),
                "{body}"
            );
        }
        assert_eq!(
            Command::Interval(Duration::from_secs(90))
                .value()
                .as_deref(),
            Some("1m 30s")
        );
    }

    #[test]
    fn unknown_commands_and_bad_values_are_refused_with_a_reason_and_keep_their_id() {
        for (body, reason) in [
            (
                r#"{"id":"a","command":"selfdestruct"}"#,
                "unknown command \"selfdestruct\"",
            ),
            (
                r#"{"id":"a","command":"interval"}"#,
                "interval needs a value",
            ),
            (
                r#"{"id":"a","command":"interval","value":"0s"}"#,
                "interval must be 1s to 1day",
            ),
            (
                r#"{"id":"a","command":"interval","value":"2days"}"#,
                "interval must be 1s to 1day",
            ),
            (
                r#"{"id":"a","command":"interval","value":"soon"}"#,
                "is not a duration",
            ),
            (
                r#"{"id":"a","command":"ping","value":"3s"}"#,
                "ping takes no value",
            ),
            (
                r#"{"id":"a","command":"identify","value":"1h"}"#,
                "identify must be 1s to 5m",
            ),
            (
                r#"{"id":"a","command":"interval","value":[1]}"#,
                "value must be a string",
            ),
        ] {
            let r = parse(body.as_bytes()).unwrap();
            assert_eq!(r.id.as_deref(), Some("a"));
            let e = r.command.expect_err(body);
            assert!(e.contains(reason), "{body}: {e}");
        }
    }

    #[test]
    fn what_is_not_a_request_says_why() {
        for (body, reason) in [
            ("[1]", "expected a JSON object"),
            ("{", "not JSON"),
            (
                r#"{"command":"ping","colour":"red"}"#,
                "\"colour\" is not a field",
            ),
            (
                r#"{"id":"a/b","command":"ping"}"#,
                "id must be 1 to 64 letters",
            ),
            (r#"{"id":"","command":"ping"}"#, "id must be 1 to 64"),
            (r#"{"id":7,"command":"ping"}"#, "id must be a string"),
            (r#"{"id":"x"}"#, "command is missing"),
        ] {
            let e = parse(body.as_bytes()).expect_err(body);
            assert!(e.contains(reason), "{body}: {e}");
        }
    }

    #[test]
    fn states_and_their_json() {
        assert!(State::Confirmed.is_final() && State::Expired.is_final());
        assert!(!State::Queued.is_final() && !State::Sent.is_final());
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        let v = state_json(
            "c-1",
            "interval",
            Some("30s"),
            State::Sent,
            1_700_000_000_123_000_000,
            "",
        );
        assert_eq!(
            v,
            serde_json::json!({"id":"c-1","command":"interval","value":"30s","state":"sent","at":"2023-11-14T22:13:20.123Z","detail":""})
        );
    }
}
