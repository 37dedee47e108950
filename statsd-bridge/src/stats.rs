//! The bridge's own counters, kept as plain numbers inside the registry (they
//! change under its lock already, so they need no atomics).

use crate::line::{ParseError, StatType};

/// statsd_exporter's event types, plus sets.
pub const EVENT_TYPES: [&str; 4] = ["counter", "gauge", "observer", "set"];

pub fn event_type(stat: StatType) -> usize {
    match stat {
        StatType::Counter => 0,
        StatType::Gauge => 1,
        StatType::Timer | StatType::Histogram | StatType::Distribution => 2,
        StatType::Set => 3,
    }
}

/// Why an event was discarded after parsing (`statsd_exporter_events_error_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventError {
    IllegalNegativeCounter,
    EmptyMetricName,
}

impl EventError {
    pub const ALL: [EventError; 2] = [
        EventError::IllegalNegativeCounter,
        EventError::EmptyMetricName,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            EventError::IllegalNegativeCounter => "illegal_negative_counter",
            EventError::EmptyMetricName => "empty_metric_name",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub udp_packets: u64,
    pub tcp_connections: u64,
    pub tcp_connection_errors: u64,
    pub tcp_too_long_lines: u64,
    /// Connections closed at once because `--statsd.tcp-max-connections` were open.
    pub tcp_connections_refused: u64,
    /// Non-empty lines.
    pub lines: u64,
    /// Samples parsed (a line may hold several).
    pub samples: u64,
    pub sample_errors: [u64; ParseError::ALL.len()],
    /// Samples that carried tags.
    pub tags: u64,
    pub tag_errors: u64,
    /// Samples applied to a series, by [`EVENT_TYPES`].
    pub events: [u64; 4],
    pub events_unmapped: u64,
    /// By mapping action: map, drop.
    pub actions: [u64; 2],
    /// Samples whose series name is taken by another type, by [`EVENT_TYPES`].
    pub conflicts: [u64; 4],
    pub event_errors: [u64; EventError::ALL.len()],
    /// Samples dropped because their series would pass `--statsd.max-series`.
    pub series_limit_drops: u64,
    pub series_expired: u64,
    pub cache_gets: u64,
    pub cache_hits: u64,
    /// Times the full mapping cache was emptied to start over.
    pub cache_resets: u64,
    /// By outcome: success, failure.
    pub config_reloads: [u64; 2],
}

impl Stats {
    pub fn parse_error(&mut self, e: ParseError) {
        self.sample_errors[e.index()] += 1;
    }

    pub fn event_error(&mut self, e: EventError) {
        self.event_errors[e as usize] += 1;
    }

    pub fn sample_errors(&self, e: ParseError) -> u64 {
        self.sample_errors[e.index()]
    }
}
