//! A cluster whose every network link runs through a [`Proxy`], so a test
//! can partition it.
//!
//! Node `i` reaches node `j` through its own proxy (the `[group] routes` of
//! node `i`'s configuration point there), so each direction of each link can
//! be cut alone. Clients reach node `j` through a client proxy of their own
//! side: `client_config` writes a configuration that knows the nodes only by
//! those addresses.

use std::collections::BTreeMap;

use crate::cluster::Cluster;
use crate::proxy::Proxy;

pub struct Links {
    /// `(from, to)` (1-based node numbers) to the proxy on that link.
    peers: BTreeMap<(usize, usize), Proxy>,
    /// `(client side, node)` to the proxy a client of that side uses.
    clients: BTreeMap<(usize, usize), Proxy>,
}

impl Links {
    /// Quickstarts `nodes` nodes with proxies on every link, `sides` client
    /// proxies per node, and starts the nodes.
    pub fn start(nodes: usize, sides: usize) -> (Cluster, Links) {
        Links::start_with(nodes, sides, &[], "")
    }

    /// Like [`Links::start`], with extra `quickstart` flags and `group` (TOML
    /// lines) added to each node's `[group]` section.
    pub fn start_with(nodes: usize, sides: usize, quickstart: &[&str], group: &str) -> (Cluster, Links) {
        let mut cluster = Cluster::start_some(nodes as u16, 0, quickstart);
        let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
        let mut links = Links { peers: BTreeMap::new(), clients: BTreeMap::new() };
        for from in 1..=nodes {
            for to in (1..=nodes).filter(|t| *t != from) {
                links.peers.insert((from, to), Proxy::start(ports[to - 1]));
            }
            for side in 1..=sides {
                links.clients.insert((side, from), Proxy::start(ports[from - 1]));
            }
        }
        for from in 1..=nodes {
            let routes: Vec<String> = (1..=nodes)
                .filter(|t| *t != from)
                .map(|to| {
                    format!("\"127.0.0.1:{}\" = \"{}\"", ports[to - 1], links.peers[&(from, to)].address())
                })
                .collect();
            cluster.nodes[from - 1]
                .configure(&format!("[group]\n{group}\nroutes = {{ {} }}", routes.join(", ")));
        }
        for node in &mut cluster.nodes {
            node.restart();
        }
        (cluster, links)
    }

    /// Cuts every link between a node in `a` and a node in `b`, both ways.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        for (&(from, to), proxy) in &self.peers {
            if (a.contains(&from) && b.contains(&to)) || (b.contains(&from) && a.contains(&to)) {
                proxy.cut();
            }
        }
    }

    /// Every link to and from `node` swallows what it carries, without
    /// closing anything: the node vanished from the network.
    pub fn black_hole(&self, node: usize) {
        let peers = self.peers.iter().filter(|((from, to), _)| *from == node || *to == node);
        let clients = self.clients.iter().filter(|((_, to), _)| *to == node);
        for proxy in peers.map(|(_, p)| p).chain(clients.map(|(_, p)| p)) {
            proxy.black_hole();
        }
    }

    /// Cuts the links from the clients of `side` to `nodes`.
    pub fn cut_clients(&self, side: usize, nodes: &[usize]) {
        for node in nodes {
            self.clients[&(side, *node)].cut();
        }
    }

    /// Opens the links from the clients of `side` to `nodes` again.
    pub fn open_clients(&self, side: usize, nodes: &[usize]) {
        for node in nodes {
            self.clients[&(side, *node)].heal();
        }
    }

    /// Holds every chunk on every link for `by` (zero: no delay).
    pub fn delay(&self, by: std::time::Duration) {
        for proxy in self.peers.values().chain(self.clients.values()) {
            proxy.delay(by);
        }
    }

    /// Opens every link again.
    pub fn heal(&self) {
        for proxy in self.peers.values().chain(self.clients.values()) {
            proxy.heal();
        }
    }

    /// Writes a client configuration `NAME.toml` for the quickstart account
    /// that reaches the nodes through `side`'s proxies only, node 1 as its
    /// primary, with its own cache; `keys` is shared so both clients back
    /// up the same account.
    pub fn client_config(&self, cluster: &Cluster, name: &str, side: usize) -> String {
        self.account_config(cluster, name, "client", side)
    }

    /// Like [`Links::client_config`], for `account`, whose keys and
    /// certificate are `ACCOUNT.keys`, `ACCOUNT.crt` and `ACCOUNT.key`.
    pub fn account_config(&self, cluster: &Cluster, name: &str, account: &str, side: usize) -> String {
        let nodes: Vec<String> = (1..=cluster.nodes.len())
            .map(|k| format!("\"coffer://{}\"", self.clients[&(side, k)].address()))
            .collect();
        let text = format!(
            "store = {}\nnodes = [{}]\nkeys = \"{account}.keys\"\ncache = \"{name}-cache\"\n\n\
             [tls]\ncert = \"{account}.crt\"\nkey = \"{account}.key\"\nca = \"ca.crt\"\n",
            nodes[0],
            nodes.join(", ")
        );
        let file = format!("{name}.toml");
        std::fs::write(cluster.path(&file), text).unwrap();
        file
    }
}
