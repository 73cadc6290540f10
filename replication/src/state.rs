//! The replicated account database: accounts, account groups, the next
//! account id, recent request outcomes, and what Raft needs to restart from
//! (last applied log id, membership).
//!
//! [`State::apply`] is deterministic: it depends only on the state and the
//! log entry, so every replica that applies the same log holds the same
//! database. It reports which keys it changed, so the state machine can write
//! exactly those, together with the new last-applied id, in one RocksDB batch.
//!
//! Usage and the client store marker are not here: they belong to each
//! replica's copy of the account's data (node's store engine).

use std::collections::{BTreeMap, BTreeSet};

use coffer_proto::retention::RetentionPolicy;
use openraft::EntryPayload;
use serde::{Deserialize, Serialize};

use crate::activity::Activity;
use crate::placement::{self, Load};
use crate::types::{Applied, Command, Entry, LogId, Member, NodeId, Outcome, Refusal, StoredMembership};

/// How many log entries a request id is remembered for.
pub const REQUEST_MEMORY: u64 = 10_000;

/// An account as the group knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: u64,
    pub name: String,
    /// Empty until the client's first login registers its keys.
    pub key_fingerprint: String,
    pub soft_limit: u64,
    pub hard_limit: u64,
    /// A frozen account can be read but not written.
    pub frozen: bool,
    /// The account group it belongs to, or empty.
    pub group: String,
    pub created_ns: i64,
    /// The nodes that hold its data, and the one its clients prefer.
    pub replicas: Vec<NodeId>,
    pub primary: NodeId,
    /// A replica being migrated away: it sends the account's clients to the
    /// other replicas.
    #[serde(default)]
    pub moving_from: Option<NodeId>,
    /// Which sets housekeeping on the primary keeps (empty: all).
    #[serde(default)]
    pub retention: RetentionPolicy,
    /// After how long without a backup `report` calls the account silent
    /// (0: its group's, or the report's default).
    #[serde(default)]
    pub silent_after_secs: u64,
    #[serde(default)]
    pub activity: Activity,
}

/// A group of accounts with a shared quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountGroup {
    pub name: String,
    pub soft_limit: u64,
    pub hard_limit: u64,
    /// After how long without a backup its accounts are silent (0: default).
    #[serde(default)]
    pub silent_after_secs: u64,
}

/// A key of the persisted state that an apply changed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Account(u64),
    Group(String),
    Request(String),
    /// Next account id, last applied log id and membership.
    Meta,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub accounts: BTreeMap<u64, Account>,
    pub groups: BTreeMap<String, AccountGroup>,
    pub next_account: u64,
    /// Request id → (log index it was applied at, its outcome).
    pub requests: BTreeMap<String, (u64, Outcome)>,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Nodes an operator allowed to join that are not members yet.
    #[serde(default)]
    pub invited: BTreeSet<String>,
}

impl State {
    pub fn account_named(&self, name: &str) -> Option<&Account> {
        self.accounts.values().find(|a| a.name == name)
    }

    /// Every member of the group: id, what it is, and whether it votes.
    pub fn members(&self) -> Vec<(NodeId, Member, bool)> {
        let membership = self.membership.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        membership.nodes().map(|(id, m)| (*id, m.clone(), voters.contains(id))).collect()
    }

    /// Whether a node called `name` is a member (voter or learner).
    pub fn is_member(&self, name: &str) -> bool {
        self.membership.membership().nodes().any(|(_, m)| m.name == name)
    }

    /// The accounts of an account group.
    pub fn group_accounts<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a Account> + 'a {
        self.accounts.values().filter(move |a| !group.is_empty() && a.group == group)
    }

    /// Live bytes of a group's accounts, as their last heartbeats reported.
    pub fn group_usage(&self, group: &str) -> u64 {
        self.group_accounts(group).map(|a| a.activity.live_bytes).fold(0, u64::saturating_add)
    }

    /// The most an account may hold: its own hard limit, or less when its
    /// group's hard limit leaves less room beside the other accounts.
    pub fn hard_limit(&self, account: &Account) -> u64 {
        let Some(group) = self.groups.get(&account.group) else { return account.hard_limit };
        let others = self.group_usage(&group.name).saturating_sub(account.activity.live_bytes);
        account.hard_limit.min(group.hard_limit.saturating_sub(others))
    }

    /// How long the account may go without a backup: its own threshold,
    /// else its group's; 0 when neither sets one.
    pub fn silent_after_secs(&self, account: &Account) -> u64 {
        match account.silent_after_secs {
            0 => self.groups.get(&account.group).map_or(0, |g| g.silent_after_secs),
            secs => secs,
        }
    }

    pub fn member(&self, id: NodeId) -> Option<Member> {
        self.membership.membership().get_node(&id).cloned()
    }

    /// A member's name, or its number when the group no longer knows it.
    pub fn member_name(&self, id: NodeId) -> String {
        self.member(id).map_or_else(|| format!("#{id}"), |m| m.name)
    }

    /// Applies one committed log entry; returns its outcome and the keys it
    /// changed.
    pub fn apply(&mut self, entry: &Entry) -> (Outcome, Vec<Key>) {
        let index = entry.log_id.index;
        self.last_applied = Some(entry.log_id);
        let mut keys = vec![Key::Meta];
        let outcome = match &entry.payload {
            EntryPayload::Blank => Ok(Applied::Nothing),
            EntryPayload::Membership(m) => {
                self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                // An invitation is used up once its node is in.
                self.invited.retain(|name| m.nodes().all(|(_, member)| &member.name != name));
                self.replace_replicas(&mut keys);
                Ok(Applied::Nothing)
            }
            EntryPayload::Normal(proposal) => match self.requests.get(&proposal.request_id) {
                Some((_, earlier)) => earlier.clone(),
                None => {
                    let outcome = self.execute(&proposal.command, &mut keys);
                    self.requests.insert(proposal.request_id.clone(), (index, outcome.clone()));
                    keys.push(Key::Request(proposal.request_id.clone()));
                    outcome
                }
            },
        };
        if index % 1024 == 0 {
            self.forget_old_requests(index, &mut keys);
        }
        (outcome, keys)
    }

    fn forget_old_requests(&mut self, index: u64, keys: &mut Vec<Key>) {
        let horizon = index.saturating_sub(REQUEST_MEMORY);
        let old: Vec<String> =
            self.requests.iter().filter(|(_, (i, _))| *i < horizon).map(|(k, _)| k.clone()).collect();
        for id in old {
            self.requests.remove(&id);
            keys.push(Key::Request(id));
        }
    }

    fn execute(&mut self, command: &Command, keys: &mut Vec<Key>) -> Outcome {
        match command {
            Command::CreateAccount { name, soft_limit, hard_limit, group, created_ns } => {
                coffer_proto::names::validate_account_name(name).map_err(Refusal::InvalidName)?;
                check_limits(*soft_limit, *hard_limit)?;
                if self.account_named(name).is_some() {
                    return Err(Refusal::AccountExists(name.clone()));
                }
                if !group.is_empty() && !self.groups.contains_key(group) {
                    return Err(Refusal::NoSuchGroup(group.clone()));
                }
                let (replicas, primary) = self.place().ok_or(Refusal::NoNodes)?;
                let id = self.next_account.max(1);
                self.next_account = id + 1;
                let account = Account {
                    id,
                    name: name.clone(),
                    key_fingerprint: String::new(),
                    soft_limit: *soft_limit,
                    hard_limit: *hard_limit,
                    frozen: false,
                    group: group.clone(),
                    created_ns: *created_ns,
                    replicas,
                    primary,
                    moving_from: None,
                    retention: RetentionPolicy::default(),
                    silent_after_secs: 0,
                    activity: Activity::default(),
                };
                self.accounts.insert(id, account.clone());
                keys.push(Key::Account(id));
                Ok(Applied::Account(account))
            }
            Command::SetLimits { name, soft_limit, hard_limit } => {
                check_limits(*soft_limit, *hard_limit)?;
                self.change(name, keys, |a| {
                    a.soft_limit = *soft_limit;
                    a.hard_limit = *hard_limit;
                })
            }
            Command::SetFrozen { name, frozen } => self.change(name, keys, |a| a.frozen = *frozen),
            Command::SetRetention { name, policy } => {
                policy.validate().map_err(Refusal::Invalid)?;
                self.change(name, keys, |a| a.retention = *policy)
            }
            Command::AllowJoin { node } => {
                self.invited.insert(node.clone());
                Ok(Applied::Nothing)
            }
            Command::RegisterKeys { name, fingerprint } => self.change(name, keys, |a| {
                if a.key_fingerprint.is_empty() {
                    a.key_fingerprint = fingerprint.clone();
                }
            }),
            Command::DeleteAccount { name } => {
                let id = self.account_named(name).ok_or_else(|| Refusal::NoSuchAccount(name.clone()))?.id;
                keys.push(Key::Account(id));
                Ok(Applied::Deleted(self.accounts.remove(&id).expect("found above")))
            }
            Command::CreateGroup { name, soft_limit, hard_limit } => {
                coffer_proto::names::validate_account_name(name).map_err(Refusal::InvalidName)?;
                check_limits(*soft_limit, *hard_limit)?;
                if self.groups.contains_key(name) {
                    return Err(Refusal::GroupExists(name.clone()));
                }
                let group = AccountGroup {
                    name: name.clone(),
                    soft_limit: *soft_limit,
                    hard_limit: *hard_limit,
                    silent_after_secs: 0,
                };
                self.groups.insert(name.clone(), group.clone());
                keys.push(Key::Group(name.clone()));
                Ok(Applied::Group(group))
            }
            Command::SetGroupLimits { name, soft_limit, hard_limit } => {
                check_limits(*soft_limit, *hard_limit)?;
                self.change_group(name, keys, |g| (g.soft_limit, g.hard_limit) = (*soft_limit, *hard_limit))
            }
            Command::DeleteGroup { name } => {
                let members = self.group_accounts(name).count();
                if members > 0 {
                    return Err(Refusal::GroupInUse { group: name.clone(), accounts: members });
                }
                let group = self.groups.remove(name).ok_or_else(|| Refusal::NoSuchGroup(name.clone()))?;
                keys.push(Key::Group(name.clone()));
                Ok(Applied::Group(group))
            }
            Command::SetAccountGroup { name, group } => {
                if !group.is_empty() && !self.groups.contains_key(group) {
                    return Err(Refusal::NoSuchGroup(group.clone()));
                }
                self.change(name, keys, |a| a.group.clone_from(group))
            }
            Command::SetSilentAfter { name, group: false, secs } => {
                self.change(name, keys, |a| a.silent_after_secs = *secs)
            }
            Command::SetSilentAfter { name, group: true, secs } => {
                self.change_group(name, keys, |g| g.silent_after_secs = *secs)
            }
            Command::Heartbeat { name, beat } => {
                beat.validate().map_err(Refusal::Invalid)?;
                self.change(name, keys, |a| a.activity.merge(beat))
            }
            Command::StartMigration { name, from, to } => {
                let voter = self.voters().iter().any(|(v, _)| v == to);
                self.migrate(name, keys, |a| match () {
                    _ if !a.replicas.contains(from) => Err(format!("node #{from} does not hold it")),
                    _ if !voter => Err(format!("node #{to} is not a voting member of the group")),
                    _ if a.moving_from.is_some_and(|m| m != *from) => {
                        Err("another migration is under way".into())
                    }
                    _ => {
                        if !a.replicas.contains(to) {
                            a.replicas.push(*to);
                            a.replicas.sort();
                        }
                        a.moving_from = Some(*from);
                        Ok(())
                    }
                })
            }
            Command::MovePrimary { name, from, to } => self.migrate(name, keys, |a| {
                if a.moving_from != Some(*from) || !a.replicas.contains(to) {
                    return Err(format!("no migration from #{from} to #{to} is under way"));
                }
                if a.primary == *from {
                    a.primary = *to;
                }
                Ok(())
            }),
            Command::FinishMigration { name, from } => self.migrate(name, keys, |a| {
                if a.moving_from != Some(*from) || a.primary == *from {
                    return Err(format!("no migration from #{from} is ready to finish"));
                }
                a.replicas.retain(|r| r != from);
                a.moving_from = None;
                Ok(())
            }),
        }
    }

    /// A migration step: `edit` checks and changes the account, or says why not.
    fn migrate(
        &mut self,
        name: &str,
        keys: &mut Vec<Key>,
        edit: impl FnOnce(&mut Account) -> Result<(), String>,
    ) -> Outcome {
        let mut refusal = None;
        let outcome = self.change(name, keys, |a| {
            let mut edited = a.clone();
            match edit(&mut edited) {
                Ok(()) => *a = edited,
                Err(problem) => refusal = Some(Refusal::Migration { account: name.to_string(), problem }),
            }
        });
        match refusal {
            Some(refusal) => Err(refusal),
            None => outcome,
        }
    }

    fn change(&mut self, name: &str, keys: &mut Vec<Key>, edit: impl FnOnce(&mut Account)) -> Outcome {
        let account = self
            .accounts
            .values_mut()
            .find(|a| a.name == name)
            .ok_or_else(|| Refusal::NoSuchAccount(name.to_string()))?;
        edit(account);
        keys.push(Key::Account(account.id));
        Ok(Applied::Account(account.clone()))
    }

    fn change_group(
        &mut self,
        name: &str,
        keys: &mut Vec<Key>,
        edit: impl FnOnce(&mut AccountGroup),
    ) -> Outcome {
        let group = self.groups.get_mut(name).ok_or_else(|| Refusal::NoSuchGroup(name.to_string()))?;
        edit(group);
        keys.push(Key::Group(name.to_string()));
        Ok(Applied::Group(group.clone()))
    }

    /// Replicas and primary for a new account, among the voting members.
    fn place(&self) -> Option<(Vec<NodeId>, NodeId)> {
        placement::place(&self.voters(), &self.load())
    }

    fn voters(&self) -> Vec<(NodeId, Member)> {
        self.members().into_iter().filter(|m| m.2).map(|(id, m, _)| (id, m)).collect()
    }

    fn load(&self) -> Load {
        let mut load = Load::default();
        for account in self.accounts.values() {
            for id in &account.replicas {
                *load.replicas.entry(*id).or_default() += 1;
            }
            *load.primaries.entry(account.primary).or_default() += 1;
        }
        load
    }

    /// After a membership change: drops members that left from every
    /// replica set (moving the primary if it left), and tops up accounts
    /// with fewer than [`placement::REPLICAS`] replicas from the voters,
    /// least loaded first. A new replica starts empty; fast sync fills it.
    fn replace_replicas(&mut self, keys: &mut Vec<Key>) {
        let voters = self.voters();
        let ids: Vec<u64> = self.accounts.keys().copied().collect();
        for id in ids {
            let load = self.load();
            let account = self.accounts.get_mut(&id).expect("listed above");
            let before = (account.replicas.clone(), account.primary);
            account.replicas.retain(|r| voters.iter().any(|(v, _)| v == r));
            let spare: Vec<(NodeId, &Member)> =
                voters.iter().filter(|(v, _)| !account.replicas.contains(v)).map(|(v, m)| (*v, m)).collect();
            let wanted = placement::REPLICAS.saturating_sub(account.replicas.len());
            if let Some((mut extra, _)) = placement::place(&spare, &load) {
                extra.truncate(wanted);
                account.replicas.extend(extra);
                account.replicas.sort();
            }
            if !account.replicas.contains(&account.primary) {
                account.primary = account.replicas.first().copied().unwrap_or(account.primary);
            }
            if account.moving_from.is_some_and(|m| !account.replicas.contains(&m)) {
                account.moving_from = None;
            }
            if (account.replicas.clone(), account.primary) != before {
                keys.push(Key::Account(id));
            }
        }
    }
}

fn check_limits(soft: u64, hard: u64) -> Result<(), Refusal> {
    if soft > hard { Err(Refusal::InvalidLimits { soft, hard }) } else { Ok(()) }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
