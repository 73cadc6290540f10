//! Wall-clock time as Coffer records it: nanoseconds since the Unix epoch,
//! in set headers, account records and tombstones alike.

/// Now, in nanoseconds since the Unix epoch (0 for a clock set before 1970).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
