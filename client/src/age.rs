//! Which changed files are old enough to upload (the daemon's lazy mode).
//!
//! A file changed within `minimum_file_age` waits, keeping its previous
//! version in the set (or staying out of it if it is new), so a file being
//! edited is not uploaded at every save. A file that keeps changing goes
//! anyway once it has waited `max_upload_wait` since a scan first found it
//! waiting. The policy lives as long as the daemon, which uses
//! [`AgePolicy::next_due`] to plan the run that will take the waiting files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub struct AgePolicy {
    min_age_ns: i64,
    max_wait_ns: i64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When each file waiting at the end of the last run was first found waiting.
    before: HashMap<PathBuf, i64>,
    /// The same for this run: files no longer seen drop out.
    now: HashMap<PathBuf, i64>,
    /// The earliest time a waiting file becomes due.
    next_due: Option<i64>,
}

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl AgePolicy {
    pub fn new(minimum_file_age: Duration, max_upload_wait: Duration) -> AgePolicy {
        AgePolicy {
            min_age_ns: ns(minimum_file_age),
            max_wait_ns: ns(max_upload_wait),
            state: Mutex::new(State::default()),
        }
    }

    /// Starts a run: files seen waiting before keep their first-seen time.
    pub fn begin(&self) {
        let mut s = self.state.lock().unwrap();
        s.before = std::mem::take(&mut s.now);
        s.next_due = None;
    }

    /// Whether a file last changed at `changed_ns` may be uploaded at `now_ns`.
    pub fn ready(&self, path: &Path, changed_ns: i64, now_ns: i64) -> bool {
        let old_enough = changed_ns.saturating_add(self.min_age_ns);
        if old_enough <= now_ns {
            return true;
        }
        let mut s = self.state.lock().unwrap();
        let first = s.before.get(path).copied().unwrap_or(now_ns);
        let forced = first.saturating_add(self.max_wait_ns);
        if forced <= now_ns {
            return true;
        }
        s.now.insert(path.to_path_buf(), first);
        let due = old_enough.min(forced);
        s.next_due = Some(s.next_due.map_or(due, |d| d.min(due)));
        false
    }

    /// Files the last run left waiting.
    pub fn waiting(&self) -> usize {
        self.state.lock().unwrap().now.len()
    }

    /// When the first waiting file becomes due (ns since the epoch).
    pub fn next_due(&self) -> Option<i64> {
        self.state.lock().unwrap().next_due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn young_files_wait_until_old_enough_or_waiting_too_long() {
        let policy = AgePolicy::new(Duration::from_secs(10), Duration::from_secs(30));
        let file = Path::new("/a/f");
        policy.begin();
        assert!(policy.ready(file, 0, 10 * S), "a file exactly old enough goes");
        assert!(!policy.ready(file, 5 * S, 10 * S));
        assert_eq!((policy.waiting(), policy.next_due()), (1, Some(15 * S)));
        // It keeps changing: each run finds it young, until 30 s after first seen.
        for t in [20, 30, 39] {
            policy.begin();
            assert!(!policy.ready(file, (t - 1) * S, t * S), "at {t}s");
            assert_eq!(policy.next_due(), Some(t * S + 9 * S).min(Some(40 * S)));
        }
        policy.begin();
        assert!(policy.ready(file, 39 * S, 40 * S), "waited max_upload_wait: goes anyway");
        policy.begin();
        assert_eq!(policy.waiting(), 0);
    }

    #[test]
    fn a_file_that_stopped_waiting_starts_afresh() {
        let policy = AgePolicy::new(Duration::from_secs(10), Duration::from_secs(30));
        let file = Path::new("/a/f");
        policy.begin();
        assert!(!policy.ready(file, 0, S));
        policy.begin(); // the file was deleted: not seen this run
        policy.begin();
        assert!(!policy.ready(file, 100 * S, 101 * S));
        assert_eq!(policy.next_due(), Some(110 * S), "first seen again at 101 s, not at 1 s");
    }
}
