//! Slowing down repeated failed logins (Box Backup's "Key Changes" note): each
//! failure for an account doubles the wait before that account's next login
//! is answered, up to a cap; a success or a quiet spell clears it. The wait
//! happens before the keys are checked, so guessing gains nothing from it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(8);
/// Failures older than this are forgotten.
const MEMORY: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginThrottle {
    /// How long to wait before answering the next login of `account`.
    pub fn delay(&self, account: &str) -> Duration {
        let failures = self.failures.lock().unwrap();
        match failures.get(account) {
            Some((n, last)) if last.elapsed() < MEMORY => {
                FIRST_DELAY.saturating_mul(1 << (n - 1).min(16)).min(MAX_DELAY)
            }
            _ => Duration::ZERO,
        }
    }

    pub fn failed(&self, account: &str) {
        let mut failures = self.failures.lock().unwrap();
        let entry = failures.entry(account.to_string()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= MEMORY {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = Instant::now();
    }

    pub fn succeeded(&self, account: &str) {
        self.failures.lock().unwrap().remove(account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_double_the_delay_up_to_a_cap_and_success_clears_it() {
        let t = LoginThrottle::default();
        assert_eq!(t.delay("a"), Duration::ZERO);
        t.failed("a");
        assert_eq!(t.delay("a"), FIRST_DELAY);
        t.failed("a");
        assert_eq!(t.delay("a"), FIRST_DELAY * 2);
        for _ in 0..20 {
            t.failed("a");
        }
        assert_eq!(t.delay("a"), MAX_DELAY);
        assert_eq!(t.delay("b"), Duration::ZERO);
        t.succeeded("a");
        assert_eq!(t.delay("a"), Duration::ZERO);
    }
}
