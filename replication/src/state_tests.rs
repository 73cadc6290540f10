//! The account database's account groups and heartbeats, applied entry by
//! entry as every replica applies them.

use openraft::{CommittedLeaderId, EntryPayload, LogId};

use super::*;
use crate::activity::Heartbeat;
use crate::types::Proposal;

const GIB: u64 = 1 << 30;

/// Applies `command` as the next log entry and returns its outcome.
fn apply(state: &mut State, command: Command) -> Outcome {
    let index = state.last_applied.map_or(1, |l| l.index + 1);
    let entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Proposal { request_id: format!("r{index}"), command }),
    };
    state.apply(&entry).0
}

fn create(state: &mut State, name: &str, hard: u64, group: &str) {
    let command = Command::CreateAccount {
        name: name.into(),
        soft_limit: hard,
        hard_limit: hard,
        group: group.into(),
        created_ns: 1,
    };
    // No members to place it on: the account goes in by hand.
    if let Err(Refusal::NoNodes) = apply(state, command) {
        let id = state.next_account.max(1);
        state.next_account = id + 1;
        state.accounts.insert(
            id,
            Account {
                id,
                name: name.into(),
                key_fingerprint: String::new(),
                soft_limit: hard,
                hard_limit: hard,
                frozen: false,
                group: group.into(),
                created_ns: 1,
                replicas: vec![1],
                primary: 1,
                moving_from: None,
                retention: RetentionPolicy::default(),
                silent_after_secs: 0,
                activity: Activity::default(),
            },
        );
    }
}

fn report_usage(state: &mut State, name: &str, marker: u64, bytes: u64) {
    let beat = Heartbeat { commit_ns: marker as i64, usage: Some((marker, bytes)), ..Default::default() };
    apply(state, Command::Heartbeat { name: name.into(), beat }).unwrap();
}

fn group(state: &mut State, name: &str, soft: u64, hard: u64) -> Outcome {
    apply(state, Command::CreateGroup { name: name.into(), soft_limit: soft, hard_limit: hard })
}

#[test]
fn a_groups_hard_limit_leaves_each_account_what_the_others_have_not_used() {
    let mut state = State::default();
    group(&mut state, "lab", 8 * GIB, 10 * GIB).unwrap();
    create(&mut state, "ann", 6 * GIB, "lab");
    create(&mut state, "bob", 100 * GIB, "lab");
    create(&mut state, "cy", 3 * GIB, "");
    report_usage(&mut state, "ann", 3, 4 * GIB);
    report_usage(&mut state, "bob", 7, 5 * GIB);
    report_usage(&mut state, "cy", 2, 2 * GIB);
    assert_eq!(state.group_usage("lab"), 9 * GIB, "only the group's accounts count");
    let limit = |s: &State, n: &str| s.hard_limit(s.account_named(n).unwrap());
    assert_eq!(limit(&state, "ann"), 5 * GIB, "10 GiB less bob's 5");
    assert_eq!(limit(&state, "bob"), 6 * GIB, "10 GiB less ann's 4");
    assert_eq!(limit(&state, "cy"), 3 * GIB, "no group: its own limit");
    // A report from an older marker (a lagging replica) changes nothing.
    report_usage(&mut state, "bob", 6, GIB);
    assert_eq!(limit(&state, "ann"), 5 * GIB);
    // Leaving the group frees the others' room.
    apply(&mut state, Command::SetAccountGroup { name: "bob".into(), group: String::new() }).unwrap();
    assert_eq!(limit(&state, "ann"), 6 * GIB, "its own limit is the smaller now");
    assert_eq!(limit(&state, "bob"), 100 * GIB);
}

#[test]
fn groups_are_created_changed_and_deleted_only_when_empty() {
    let mut state = State::default();
    group(&mut state, "lab", GIB, GIB).unwrap();
    assert_eq!(group(&mut state, "lab", GIB, GIB), Err(Refusal::GroupExists("lab".into())));
    assert!(matches!(group(&mut state, "x", 2 * GIB, GIB), Err(Refusal::InvalidLimits { .. })));
    create(&mut state, "ann", GIB, "");
    let into = |g: &str| Command::SetAccountGroup { name: "ann".into(), group: g.into() };
    assert_eq!(apply(&mut state, into("nope")), Err(Refusal::NoSuchGroup("nope".into())));
    apply(&mut state, into("lab")).unwrap();
    let set = Command::SetGroupLimits { name: "lab".into(), soft_limit: GIB, hard_limit: 2 * GIB };
    assert!(matches!(apply(&mut state, set), Ok(Applied::Group(g)) if g.hard_limit == 2 * GIB));
    let delete = || Command::DeleteGroup { name: "lab".into() };
    assert_eq!(
        apply(&mut state, delete()),
        Err(Refusal::GroupInUse { group: "lab".into(), accounts: 1 }),
        "an account still belongs to it"
    );
    apply(&mut state, into("")).unwrap();
    apply(&mut state, delete()).unwrap();
    assert!(state.groups.is_empty());
    let silent = Command::SetSilentAfter { name: "lab".into(), group: true, secs: 60 };
    assert_eq!(apply(&mut state, silent), Err(Refusal::NoSuchGroup("lab".into())));
}
