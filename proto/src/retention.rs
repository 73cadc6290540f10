//! Retention: which backup sets a policy keeps, in the manner restic and
//! borg users know (`--keep-last 3 --keep-daily 7 --keep-weekly 4 ...`).
//!
//! Sets are taken newest first. `keep_last` keeps the N newest. Each of
//! `keep_hourly` ... `keep_yearly` keeps the newest set of each of the N
//! most recent hours (days, ISO weeks, months, years) that have one.
//! `keep_within` keeps every set no older than that much before the newest
//! set (not before now: an account that stopped backing up keeps its last
//! sets). The newest set is always kept, and a policy that keeps nothing
//! by any rule (all zero) keeps everything: an empty policy is "no
//! retention", never "delete all". Periods are UTC, so that every node of a
//! group, on whatever site, decides alike.
//!
//! It reads only the sets' cleartext times, so the store can apply it
//! without the client's keys. An account's policy lives in the replicated
//! account database (wire form [`wire::Retention`]); the account's primary
//! applies it at housekeeping.

use std::time::Duration;

use crate::ObjectId;
use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::wire;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionPolicy {
    pub keep_last: u32,
    pub keep_hourly: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
    /// Keep every set this close to the newest.
    #[serde(with = "duration_secs")]
    pub keep_within: Option<Duration>,
}

mod duration_secs {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(|d| d.as_secs()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_secs))
    }
}

/// What the policy says of one set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: ObjectId,
    pub time_ns: i64,
    pub keep: bool,
    /// The rules that keep it ("last", "daily", "within", "newest", ...).
    pub reasons: Vec<&'static str>,
}

type Period = fn(&DateTime<Utc>) -> (i32, u32);

const PERIODS: [(&str, Period); 5] = [
    ("hourly", |t| (t.year(), t.ordinal() * 24 + t.hour())),
    ("daily", |t| (t.year(), t.ordinal())),
    ("weekly", |t| (t.iso_week().year(), t.iso_week().week())),
    ("monthly", |t| (t.year(), t.month())),
    ("yearly", |t| (t.year(), 0)),
];

impl RetentionPolicy {
    /// Whether the policy keeps everything (no rule set).
    pub fn is_empty(&self) -> bool {
        self.keep_within.is_none() && self.counts().iter().all(|n| *n == 0) && self.keep_last == 0
    }

    fn counts(&self) -> [u32; 5] {
        [self.keep_hourly, self.keep_daily, self.keep_weekly, self.keep_monthly, self.keep_yearly]
    }

    /// Decides every set of `sets` (id and time), returned newest first.
    pub fn apply(&self, sets: &[(ObjectId, i64)]) -> Vec<Decision> {
        let mut sorted = sets.to_vec();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
        let mut decisions: Vec<Decision> = sorted
            .iter()
            .map(|&(id, time_ns)| Decision { id, time_ns, keep: false, reasons: Vec::new() })
            .collect();
        if self.is_empty() {
            decisions.iter_mut().for_each(|d| d.keep = true);
            return decisions;
        }
        if let Some(newest) = decisions.first_mut() {
            newest.reasons.push("newest");
        }
        for d in decisions.iter_mut().take(self.keep_last as usize) {
            d.reasons.push("last");
        }
        for ((name, period), count) in PERIODS.iter().zip(self.counts()) {
            let mut last = None;
            let mut kept = 0;
            for d in decisions.iter_mut() {
                if kept == count {
                    break;
                }
                let key = period(&DateTime::from_timestamp_nanos(d.time_ns));
                if last != Some(key) {
                    last = Some(key);
                    kept += 1;
                    d.reasons.push(name);
                }
            }
        }
        if let (Some(within), Some(newest)) = (self.keep_within, decisions.first().map(|d| d.time_ns)) {
            let from = newest.saturating_sub(i64::try_from(within.as_nanos()).unwrap_or(i64::MAX));
            for d in decisions.iter_mut().filter(|d| d.time_ns >= from) {
                d.reasons.push("within");
            }
        }
        decisions.iter_mut().for_each(|d| d.keep = !d.reasons.is_empty());
        decisions
    }
}

/// The longest `keep_within` a policy may hold: a century. A larger value
/// from the network is refused, not carried into time arithmetic.
pub const MAX_KEEP_WITHIN: Duration = Duration::from_secs(100 * 366 * 24 * 3600);

impl RetentionPolicy {
    /// The wire form; `keep_within_secs` 0 means no such rule.
    pub fn to_wire(&self) -> wire::Retention {
        wire::Retention {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within_secs: self.keep_within.map_or(0, |d| d.as_secs()),
        }
    }

    /// A policy from the wire, refused when `keep_within` passes [`MAX_KEEP_WITHIN`].
    pub fn from_wire(w: &wire::Retention) -> Result<RetentionPolicy, String> {
        let policy = RetentionPolicy {
            keep_last: w.keep_last,
            keep_hourly: w.keep_hourly,
            keep_daily: w.keep_daily,
            keep_weekly: w.keep_weekly,
            keep_monthly: w.keep_monthly,
            keep_yearly: w.keep_yearly,
            keep_within: (w.keep_within_secs > 0).then(|| Duration::from_secs(w.keep_within_secs)),
        };
        policy.validate()?;
        Ok(policy)
    }

    /// `keep_within` is kept in whole seconds, from one to a century.
    pub fn validate(&self) -> Result<(), String> {
        match self.keep_within {
            Some(d) if d > MAX_KEEP_WITHIN => {
                Err(format!("keep_within of {} s is longer than a century", d.as_secs()))
            }
            Some(d) if d.as_secs() == 0 => Err("keep_within must be at least a second".into()),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for RetentionPolicy {
    /// "keep last 3, daily 7, within 30days", or "none (every set is kept)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("none (every set is kept)");
        }
        let counts =
            [("last", self.keep_last)].into_iter().chain(PERIODS.iter().map(|p| p.0).zip(self.counts()));
        let mut rules: Vec<String> =
            counts.filter(|(_, n)| *n > 0).map(|(name, n)| format!("{name} {n}")).collect();
        rules.extend(self.keep_within.map(|d| format!("within {}", humantime::format_duration(d))));
        write!(f, "keep {}", rules.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600 * 1_000_000_000;
    const DAY: i64 = 24 * HOUR;

    /// A set every 6 hours for 60 days, from 2026-01-01 00:00 UTC.
    fn sets() -> Vec<(ObjectId, i64)> {
        let start = 1_767_225_600 * 1_000_000_000; // 2026-01-01T00:00:00Z
        (0..240).map(|i| (ObjectId([i as u8; 32]), start + i * 6 * HOUR)).collect()
    }

    fn kept(policy: RetentionPolicy) -> Vec<i64> {
        policy.apply(&sets()).into_iter().filter(|d| d.keep).map(|d| d.time_ns).collect()
    }

    #[test]
    fn an_empty_policy_keeps_everything() {
        assert_eq!(kept(RetentionPolicy::default()).len(), 240);
    }

    #[test]
    fn keep_last_and_the_newest_always() {
        let k = kept(RetentionPolicy { keep_last: 3, ..Default::default() });
        assert_eq!(k.len(), 3);
        let newest = sets().iter().map(|s| s.1).max().unwrap();
        assert_eq!(k[0], newest);
        // A policy whose rules keep nothing recent still keeps the newest.
        let k = kept(RetentionPolicy { keep_yearly: 1, ..Default::default() });
        assert_eq!(k, vec![newest]);
    }

    #[test]
    fn periods_keep_the_newest_set_of_each_period() {
        let daily = kept(RetentionPolicy { keep_daily: 7, ..Default::default() });
        assert_eq!(daily.len(), 7);
        for pair in daily.windows(2) {
            assert_eq!(pair[0] - pair[1], DAY, "one per day, each day's last (18:00)");
        }
        let weekly = kept(RetentionPolicy { keep_weekly: 4, ..Default::default() });
        assert_eq!(weekly.len(), 4);
        let monthly = kept(RetentionPolicy { keep_monthly: 12, ..Default::default() });
        assert_eq!(monthly.len(), 3, "60 days from 1 January reach 1 March");
        let hourly = kept(RetentionPolicy { keep_hourly: 5, ..Default::default() });
        assert_eq!(hourly.len(), 5, "every set is in an hour of its own");
    }

    #[test]
    fn rules_add_up_and_say_why() {
        let policy = RetentionPolicy {
            keep_last: 2,
            keep_daily: 3,
            keep_within: Some(Duration::from_secs(36 * 3600)),
            ..Default::default()
        };
        let decisions = policy.apply(&sets());
        let kept: Vec<&Decision> = decisions.iter().filter(|d| d.keep).collect();
        // within 36 h of the newest: 7 sets (0, 6, ..., 36 h back); daily adds the third day's last.
        assert_eq!(kept.len(), 8, "{kept:?}");
        assert_eq!(kept[0].reasons, ["newest", "last", "daily", "within"]);
        assert!(decisions.iter().filter(|d| !d.keep).all(|d| d.reasons.is_empty()));
    }

    #[test]
    fn the_wire_form_round_trips_and_an_absurd_duration_is_refused() {
        let policy = RetentionPolicy {
            keep_last: 3,
            keep_daily: 7,
            keep_within: Some(Duration::from_secs(30 * 86_400)),
            ..Default::default()
        };
        assert_eq!(RetentionPolicy::from_wire(&policy.to_wire()), Ok(policy));
        assert_eq!(policy.to_string(), "keep last 3, daily 7, within 30days");
        assert_eq!(RetentionPolicy::default().to_string(), "none (every set is kept)");
        let absurd = wire::Retention { keep_within_secs: u64::MAX, ..Default::default() };
        assert!(RetentionPolicy::from_wire(&absurd).unwrap_err().contains("century"));
    }
}
