//! The hour rules, pure: which hour an event is added to (its own, or the earliest later one not
//! yet metered: carried), when an hour is due to be metered (ended and settled, or its longest
//! delay reached, or its window about to close), and when it can no longer be sent (its record
//! would be older than `metering.window_secs`, or last month's after 06:00 UTC on the 1st).
//! Everything here takes `now` as an argument; the tests drive it with tokio's paused clock.

use chrono::{DateTime, Datelike, TimeZone, Utc};

pub const HOUR: i64 = 3_600;
/// How far ahead of our clock a timestamp may be (clocks drift; AWS allows the same).
pub const FUTURE_SKEW_SECS: i64 = 5 * 60;
/// Last month's usage is accepted until 06:00 UTC on the 1st.
pub const MONTH_END_GRACE_SECS: i64 = 6 * HOUR;
/// An hour is due this long before its window closes at the latest, whatever else holds, so the
/// call (and its retries) land inside it.
pub const URGENT_MARGIN_SECS: i64 = 10 * 60;

/// The settings the rules depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourRules {
    pub settle_secs: i64,
    pub max_delay_secs: i64,
    pub window_secs: i64,
}

impl HourRules {
    pub fn from_settings(m: &crate::config::MeteringSettings) -> Self {
        HourRules {
            settle_secs: m.settle_secs as i64,
            max_delay_secs: m.max_delay_secs as i64,
            window_secs: m.window_secs as i64,
        }
    }
}

/// The start of the hour `timestamp` (unix seconds) falls in.
pub fn hour_of(timestamp: i64) -> i64 {
    timestamp.div_euclid(HOUR) * HOUR
}

/// `2026-12-04T10`: the hour's name in sort keys and operator output (sorts as time does).
pub fn hour_label(hour: i64) -> String {
    DateTime::<Utc>::from_timestamp(hour, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H")
        .to_string()
}

/// The hour a label names, e.g. from `usage show --hour`.
pub fn parse_hour_label(label: &str) -> Option<i64> {
    let full = format!("{label}:00:00Z");
    DateTime::parse_from_rfc3339(&full)
        .ok()
        .map(|t| hour_of(t.timestamp()))
}

/// `2026-12-04T10:00:00Z`: the hour in events.
pub fn hour_rfc3339(hour: i64) -> String {
    DateTime::<Utc>::from_timestamp(hour, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The timestamp the hour's record carries: its last second, the freshest one AWS de-duplicates
/// into the hour, and the same on every resend (an identical request is idempotent).
pub fn record_timestamp(hour: i64) -> i64 {
    hour + HOUR - 1
}

/// 06:00 UTC on the first day of the month after the hour's: when its month closes for metering.
pub fn month_cutoff(hour: i64) -> i64 {
    let t = DateTime::<Utc>::from_timestamp(hour, 0).unwrap_or_default();
    let (year, month) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .map_or(i64::MAX, |start| start.timestamp())
        + MONTH_END_GRACE_SECS
}

fn same_month(a: i64, b: i64) -> bool {
    let (a, b) = (
        DateTime::<Utc>::from_timestamp(a, 0).unwrap_or_default(),
        DateTime::<Utc>::from_timestamp(b, 0).unwrap_or_default(),
    );
    (a.year(), a.month()) == (b.year(), b.month())
}

/// The first moment the hour's record can no longer be sent.
pub fn deadline(hour: i64, rules: HourRules) -> i64 {
    (record_timestamp(hour) + rules.window_secs).min(month_cutoff(hour))
}

/// Where an hour stands at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not ended yet: usage is still coming.
    Open,
    /// Ended; due at `due_at` unless more usage arrives (which moves it, up to the longest delay).
    Settling { due_at: i64 },
    /// To be metered now.
    Due,
    /// Can no longer be sent inside AWS's window: its usage is dead-lettered.
    Expired,
}

/// The phase of `hour`, whose last event arrived at `last_event` (unix seconds; 0 = none).
pub fn phase(hour: i64, last_event: i64, now: i64, rules: HourRules) -> Phase {
    let end = hour + HOUR;
    let deadline = deadline(hour, rules);
    if now >= deadline {
        return Phase::Expired;
    }
    if now < end {
        return Phase::Open;
    }
    let due_at = (last_event + rules.settle_secs)
        .max(end)
        .min(end + rules.max_delay_secs)
        .min(deadline - URGENT_MARGIN_SECS);
    if now >= due_at {
        Phase::Due
    } else {
        Phase::Settling { due_at }
    }
}

/// What the store shows of one hour of a subscription and dimension, for placing an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourView {
    pub hour: i64,
    /// Still takes usage: not claimed for metering, not metered.
    pub open: bool,
}

/// Where one event's quantity goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Added to `hour`; `carried_from` its own hour when that was metered already.
    Hour {
        hour: i64,
        carried_from: Option<i64>,
    },
    /// Dead-lettered as `outside_metering_window` with this detail.
    OutsideWindow { detail: String },
}

/// Places an event of `timestamp` at `now`, given the hours the store knows for its subscription
/// and dimension (hours absent from `known` are new, so open).
pub fn place(timestamp: i64, now: i64, known: &[HourView], rules: HourRules) -> Placement {
    if timestamp > now + FUTURE_SKEW_SECS {
        return Placement::OutsideWindow {
            detail: format!(
                "the timestamp {} is more than {FUTURE_SKEW_SECS} s in the future",
                hour_rfc3339(timestamp)
            ),
        };
    }
    let own = hour_of(timestamp);
    if now >= deadline(own, rules) {
        let why = if now >= month_cutoff(own) {
            "its month closed for metering at 06:00 UTC on the 1st"
        } else {
            "it is older than the metering window"
        };
        return Placement::OutsideWindow {
            detail: format!("usage of the hour {}: {why}", hour_label(own)),
        };
    }
    let is_open = |hour: i64| known.iter().find(|v| v.hour == hour).is_none_or(|v| v.open);
    let current = hour_of(now).max(own);
    let mut hour = own;
    while hour <= current {
        if !same_month(hour, own) {
            break;
        }
        if is_open(hour) && now < deadline(hour, rules) {
            return Placement::Hour {
                hour,
                carried_from: (hour != own).then_some(own),
            };
        }
        hour += HOUR;
    }
    Placement::OutsideWindow {
        detail: format!(
            "usage of the hour {}: that hour was metered and no later hour of its month is open",
            hour_label(own)
        ),
    }
}

/// The hour that gets zero records at `now`: the last one that ended, once it settled, until its
/// longest delay passed (outside that span, no hour: a worker that was down does not back-fill).
pub fn zero_record_hour(now: i64, rules: HourRules) -> Option<i64> {
    let hour = hour_of(now) - HOUR;
    let end = hour + HOUR;
    (now >= end + rules.settle_secs && now <= end + rules.max_delay_secs.max(rules.settle_secs))
        .then_some(hour)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: HourRules = HourRules {
        settle_secs: 300,
        max_delay_secs: 3_600,
        window_secs: 18_000,
    };

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp()
    }

    /// The clock these tests read: tokio's, paused, from a known instant, advanced as the rows say.
    struct Clock {
        base: i64,
        start: tokio::time::Instant,
    }

    impl Clock {
        fn at(text: &str) -> Self {
            Clock {
                base: at(text),
                start: tokio::time::Instant::now(),
            }
        }
        fn now(&self) -> i64 {
            self.base + self.start.elapsed().as_secs() as i64
        }
    }

    #[test]
    fn labels_sort_as_time_and_parse_back() {
        let h = at("2026-12-04T10:15:00Z");
        assert_eq!(hour_label(hour_of(h)), "2026-12-04T10");
        assert_eq!(parse_hour_label("2026-12-04T10"), Some(hour_of(h)));
        assert_eq!(hour_rfc3339(hour_of(h)), "2026-12-04T10:00:00Z");
        assert_eq!(record_timestamp(hour_of(h)), at("2026-12-04T10:59:59Z"));
        assert_eq!(parse_hour_label("yesterday"), None);
    }

    #[test]
    fn month_cutoff_is_six_on_the_first() {
        assert_eq!(
            month_cutoff(at("2026-11-30T23:00:00Z")),
            at("2026-12-01T06:00:00Z")
        );
        assert_eq!(
            month_cutoff(at("2026-12-31T23:00:00Z")),
            at("2027-01-01T06:00:00Z")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_hour_settles_then_is_due_and_late_usage_moves_it_up_to_the_longest_delay() {
        let hour = at("2026-12-04T10:00:00Z");
        let clock = Clock::at("2026-12-04T10:30:00Z");
        assert_eq!(phase(hour, clock.now(), clock.now(), RULES), Phase::Open);
        tokio::time::advance(std::time::Duration::from_secs(30 * 60)).await; // 11:00
        let last = clock.now() - 10;
        assert_eq!(
            phase(hour, last, clock.now(), RULES),
            Phase::Settling { due_at: last + 300 }
        );
        tokio::time::advance(std::time::Duration::from_secs(291)).await;
        assert_eq!(phase(hour, last, clock.now(), RULES), Phase::Due);
        // Usage that keeps arriving only delays it to an hour after its end.
        let busy = at("2026-12-04T11:59:00Z");
        assert!(matches!(
            phase(hour, busy, at("2026-12-04T11:59:30Z"), RULES),
            Phase::Settling { due_at } if due_at == at("2026-12-04T12:00:00Z")
        ));
        assert_eq!(
            phase(hour, busy, at("2026-12-04T12:00:00Z"), RULES),
            Phase::Due
        );
    }

    #[test]
    fn the_window_expires_an_hour_and_is_never_passed_waiting() {
        let hour = at("2026-12-04T10:00:00Z");
        let deadline = at("2026-12-04T15:59:59Z");
        assert_eq!(super::deadline(hour, RULES), deadline);
        assert_eq!(phase(hour, 0, deadline - 1, RULES), Phase::Due);
        assert_eq!(phase(hour, 0, deadline, RULES), Phase::Expired);
        // A long settle never pushes the due time past the window's urgent margin.
        let slow = HourRules {
            settle_secs: 3_600,
            max_delay_secs: 10_800,
            window_secs: 10_800,
        };
        let due = phase(
            hour,
            at("2026-12-04T13:30:00Z"),
            at("2026-12-04T13:31:00Z"),
            slow,
        );
        assert!(
            matches!(due, Phase::Settling { due_at } if due_at == at("2026-12-04T13:49:59Z")),
            "{due:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn last_months_usage_closes_at_six_on_the_first() {
        // A window long enough (the pinned SDK's 24 h) that the month's close, not the window,
        // is what ends the hour.
        let rules = HourRules {
            window_secs: 24 * 3_600,
            ..RULES
        };
        let hour = at("2026-11-30T23:00:00Z");
        let clock = Clock::at("2026-12-01T05:30:00Z");
        // Inside the month-end grace: still sent, urgently.
        assert_eq!(phase(hour, clock.now(), clock.now(), rules), Phase::Due);
        assert!(matches!(
            place(hour + 60, clock.now(), &[], rules),
            Placement::Hour { hour: h, carried_from: None } if h == hour
        ));
        tokio::time::advance(std::time::Duration::from_secs(30 * 60)).await; // 06:00
        assert_eq!(phase(hour, 0, clock.now(), rules), Phase::Expired);
        let Placement::OutsideWindow { detail } = place(hour + 60, clock.now(), &[], rules) else {
            panic!("placed after the cutoff")
        };
        assert!(detail.contains("month closed"), "{detail}");
    }

    #[test]
    fn placement_table() {
        let now = at("2026-12-04T12:20:00Z");
        let h10 = at("2026-12-04T10:00:00Z");
        let (h11, h12) = (h10 + HOUR, h10 + 2 * HOUR);
        let closed = |hour| HourView { hour, open: false };
        let open = |hour| HourView { hour, open: true };
        #[rustfmt::skip]
        let rows: Vec<(i64, Vec<HourView>, Placement)> = vec![
            // Its own hour, new or open.
            (h10 + 900, vec![], Placement::Hour { hour: h10, carried_from: None }),
            (h10 + 900, vec![open(h10)], Placement::Hour { hour: h10, carried_from: None }),
            // Its hour metered: the earliest later hour not metered, new or open.
            (h10 + 900, vec![closed(h10)], Placement::Hour { hour: h11, carried_from: Some(h10) }),
            (h10 + 900, vec![closed(h10), closed(h11), open(h12)],
                Placement::Hour { hour: h12, carried_from: Some(h10) }),
            // The current hour, even.
            (h12 + 60, vec![], Placement::Hour { hour: h12, carried_from: None }),
        ];
        for (timestamp, known, want) in rows {
            assert_eq!(place(timestamp, now, &known, RULES), want, "{known:?}");
        }
        // 8 hours old: outside the window.
        let old = place(now - 8 * HOUR, now, &[], RULES);
        assert!(
            matches!(&old, Placement::OutsideWindow { detail } if detail.contains("older than the metering window")),
            "{old:?}"
        );
        // In the future beyond the skew.
        let future = place(now + 600, now, &[], RULES);
        assert!(matches!(future, Placement::OutsideWindow { .. }));
        // Every hour up to now metered: nowhere to carry it.
        let full = place(h12 + 60, now, &[closed(h12)], RULES);
        assert!(matches!(full, Placement::OutsideWindow { .. }), "{full:?}");
    }

    #[test]
    fn carrying_never_crosses_into_the_next_month() {
        let h = at("2026-11-30T23:00:00Z");
        let now = at("2026-12-01T01:00:00Z");
        let placed = place(
            h + 60,
            now,
            &[HourView {
                hour: h,
                open: false,
            }],
            RULES,
        );
        assert!(
            matches!(placed, Placement::OutsideWindow { .. }),
            "{placed:?}"
        );
    }

    #[test]
    fn zero_records_go_to_the_last_hour_once_it_settled() {
        assert_eq!(zero_record_hour(at("2026-12-04T11:04:59Z"), RULES), None);
        assert_eq!(
            zero_record_hour(at("2026-12-04T11:05:00Z"), RULES),
            Some(at("2026-12-04T10:00:00Z"))
        );
        assert_eq!(
            zero_record_hour(at("2026-12-04T11:59:00Z"), RULES),
            Some(at("2026-12-04T10:00:00Z"))
        );
    }
}
