//! The `--keep-*` retention rules as a command line gives them, for
//! `coffer forget` and `coffer-admin account set-retention` alike.

use clap::Args;
use coffer_proto::retention::RetentionPolicy;

use crate::error::{Error, Result};

/// The retention rules, as restic and borg users write them.
#[derive(Args, Clone, Default)]
pub struct KeepArgs {
    /// Keep the N newest sets.
    #[arg(long, default_value_t = 0)]
    keep_last: u32,
    /// Keep the newest set of each of the N most recent hours that have one.
    #[arg(long, default_value_t = 0)]
    keep_hourly: u32,
    /// ... of days (UTC).
    #[arg(long, default_value_t = 0)]
    keep_daily: u32,
    /// ... of ISO weeks.
    #[arg(long, default_value_t = 0)]
    keep_weekly: u32,
    #[arg(long, default_value_t = 0)]
    keep_monthly: u32,
    #[arg(long, default_value_t = 0)]
    keep_yearly: u32,
    /// Keep every set this close to the newest ("30d", "12h").
    #[arg(long)]
    keep_within: Option<String>,
}

impl KeepArgs {
    /// The policy these rules make; refused when `--keep-within` is not a
    /// duration or is longer than a century.
    pub fn policy(&self) -> Result<RetentionPolicy> {
        let invalid = |text: &str, why: String| Error::Invalid(format!("--keep-within {text}: {why}"));
        let keep_within = match &self.keep_within {
            Some(text) => Some(humantime::parse_duration(text).map_err(|e| invalid(text, e.to_string()))?),
            None => None,
        };
        let policy = RetentionPolicy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within,
        };
        policy.validate().map_err(|e| invalid(self.keep_within.as_deref().unwrap_or_default(), e))?;
        Ok(policy)
    }
}
