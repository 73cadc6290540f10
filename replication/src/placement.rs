//! Placement: which nodes hold an account, and which of them its clients
//! prefer (the primary).
//!
//! An account goes to [`REPLICAS`] voting nodes, fewest accounts first, on
//! distinct sites while there are unused sites left; with fewer nodes it goes
//! to all of them. The primary is the chosen node that is primary for the
//! fewest accounts. Ties break by node id, so every replica computes the
//! same answer from the same state.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{Member, NodeId};

/// How many nodes hold each account.
pub const REPLICAS: usize = 3;

/// How many accounts each node holds, and is primary for.
#[derive(Debug, Default)]
pub struct Load {
    pub replicas: BTreeMap<NodeId, usize>,
    pub primaries: BTreeMap<NodeId, usize>,
}

/// Chooses replicas and a primary among `nodes`; `None` when there are none.
pub fn place<M: std::borrow::Borrow<Member>>(
    nodes: &[(NodeId, M)],
    load: &Load,
) -> Option<(Vec<NodeId>, NodeId)> {
    let count = |map: &BTreeMap<NodeId, usize>, id: &NodeId| map.get(id).copied().unwrap_or(0);
    let mut candidates: Vec<(NodeId, &Member)> = nodes.iter().map(|(id, m)| (*id, m.borrow())).collect();
    candidates.sort_by_key(|(id, _)| (count(&load.replicas, id), *id));
    let mut chosen: Vec<(NodeId, &Member)> = Vec::new();
    let mut sites = BTreeSet::new();
    while chosen.len() < REPLICAS && !candidates.is_empty() {
        let fresh_site = candidates.iter().position(|(_, m)| m.site.is_empty() || !sites.contains(&m.site));
        let (id, member) = candidates.remove(fresh_site.unwrap_or(0));
        sites.insert(member.site.clone());
        chosen.push((id, member));
    }
    let primary = chosen.iter().map(|(id, _)| *id).min_by_key(|id| (count(&load.primaries, id), *id))?;
    let mut replicas: Vec<NodeId> = chosen.into_iter().map(|(id, _)| id).collect();
    replicas.sort();
    Some((replicas, primary))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(site: &str) -> Member {
        Member { name: String::new(), addr: String::new(), site: site.into() }
    }

    #[test]
    fn spreads_over_sites_then_load() {
        let (a, b, c) = (member("a"), member("b"), member("c"));
        let nodes = [(1, &a), (2, &a), (3, &b), (4, &b), (5, &c)];
        let (replicas, primary) = place(&nodes, &Load::default()).unwrap();
        assert_eq!(replicas, vec![1, 3, 5], "one node per site");
        assert_eq!(primary, 1);

        let mut load = Load::default();
        load.replicas.extend([(1, 5), (3, 5), (5, 5)]);
        load.primaries.extend([(2, 2)]);
        let (replicas, primary) = place(&nodes, &load).unwrap();
        assert_eq!(replicas, vec![2, 4, 5], "least-loaded node of each site");
        assert_eq!(primary, 4, "node 2 is already primary twice");
    }

    #[test]
    fn small_groups_and_no_sites() {
        let none = member("");
        assert_eq!(place(&[(7, &none)], &Load::default()), Some((vec![7], 7)));
        let (replicas, _) =
            place(&[(1, &none), (2, &none), (3, &none), (4, &none)], &Load::default()).unwrap();
        assert_eq!(replicas.len(), REPLICAS);
        assert_eq!(place::<Member>(&[], &Load::default()), None);
    }
}
