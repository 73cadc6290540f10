//! Times as people type and read them: RFC 3339, or "YYYY-MM-DD HH:MM:SS"
//! (optionally with fractional seconds) in local time.

use chrono::{DateTime, Local, NaiveDateTime, TimeZone};

use crate::error::{Error, Result};

/// Parses a time into nanoseconds since the Unix epoch.
pub fn parse(s: &str) -> Result<i64> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return nanos(t.timestamp_nanos_opt(), s);
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, format) {
            let local = Local
                .from_local_datetime(&naive)
                .earliest()
                .ok_or_else(|| Error::Invalid(format!("`{s}` does not exist in the local time zone")))?;
            return nanos(local.timestamp_nanos_opt(), s);
        }
    }
    Err(Error::Invalid(format!(
        "cannot read time `{s}`: use RFC 3339 or \"YYYY-MM-DD HH:MM:SS\" (local time)"
    )))
}

fn nanos(n: Option<i64>, s: &str) -> Result<i64> {
    n.ok_or_else(|| Error::Invalid(format!("time `{s}` is out of range")))
}

/// Formats nanoseconds since the epoch as local "YYYY-MM-DD HH:MM:SS".
pub fn format(ns: i64) -> String {
    Local.timestamp_nanos(ns).format("%Y-%m-%d %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(parse("1970-01-01T00:00:01Z").unwrap(), 1_000_000_000);
        assert_eq!(parse("2026-01-02T03:04:05.5+00:00").unwrap() % 1_000_000_000, 500_000_000);
        let local = parse("2026-01-02 03:04:05").unwrap();
        assert_eq!(format(local), "2026-01-02 03:04:05");
        assert!(parse("yesterday").is_err());
    }
}
