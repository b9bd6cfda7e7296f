//! What the outbox stores: rows of `readings`, each with its [`Seq`], and gateway events as
//! rows marked with [`EVENT_UNIT`].

use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::decode::packet_event::EventReading;
use crate::reading::CompactString;

/// An outbox sequence number: orders every row and is never reused, even after every row was
/// pruned. A sink's cursor is the highest `Seq` it has delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
#[serde(transparent)]
pub struct Seq(i64);

impl Seq {
    /// Before the first row: the cursor of a sink that has delivered nothing.
    pub const START: Seq = Seq(0);

    /// The seq numbered `n` (as SQLite, a counter or a test has it).
    pub const fn new(n: i64) -> Seq {
        Seq(n)
    }

    /// The number.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The seq `n` rows on.
    pub fn plus(self, n: i64) -> Seq {
        Seq(self.0.saturating_add(n))
    }
}

impl std::fmt::Display for Seq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ToSql for Seq {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl FromSql for Seq {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(value).map(Seq)
    }
}

/// A row of `readings` as read back: a reading with its seq and packet time, or a gateway
/// event (see [`StoredReading::is_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReading {
    /// Its place in the outbox: strictly increasing, the unit of every sink cursor.
    pub seq: Seq,
    /// Receive time of the packet, ns since the Unix epoch.
    pub ts_ns: i64,
    /// Node name.
    pub node: CompactString,
    /// Metric name.
    pub metric: CompactString,
    /// Unit tag, if any.
    pub unit: Option<CompactString>,
    /// Value text as written by the firmware.
    pub value: CompactString,
    /// Where another gateway received it (central ingest); `None` for our own source's.
    pub origin: Option<Box<crate::reading::Origin>>,
}

/// The `unit` that marks an outbox row as a gateway event rather than a reading: events are
/// rows with `node` = what it is about, `metric` = the event kind, `value` = a text. The
/// decoder never produces this unit (units are a fixed set), so the two cannot mix up. The
/// SQL of this module binds it as a parameter; no query spells it.
pub const EVENT_UNIT: &str = "event";

impl StoredReading {
    /// Whether this row is a gateway event (see [`EVENT_UNIT`]).
    pub fn is_event(&self) -> bool {
        self.unit.as_deref() == Some(EVENT_UNIT)
    }

    /// The reading as a packet event carries it.
    pub fn event_reading(&self) -> EventReading<'_> {
        EventReading {
            node: &self.node,
            metric: &self.metric,
            unit: self.unit.as_deref(),
            value: &self.value,
        }
    }
}

/// A gateway event to commit: `kind` happened to `node` at `ts_ns`, in words `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// When, ns since the Unix epoch.
    pub ts_ns: i64,
    /// What it is about (`gateway`, a sink, a node).
    pub node: String,
    /// The event kind's name (`gateway_started`, ...).
    pub kind: &'static str,
    /// For people.
    pub text: String,
}
