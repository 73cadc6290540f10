//! `coffer-admin migrate`: finds the account's source node and asks it to
//! move the account (the node does the work, see `coffer_node::migrate`),
//! which then purges its copy; `coffer-admin purge` asks a node to purge
//! the copy an earlier or cut-short move left.

use anyhow::{Context, Result, anyhow, bail};
use coffer_proto::StoreUrl;
use coffer_proto::tls::TlsFiles;
use coffer_proto::wire::{self, admin_client::AdminClient};
use tonic::transport::Channel;

/// Moves `account` to node `to`, from `from` or else the account's primary.
pub async fn migrate(
    admin: &mut AdminClient<Channel>,
    tls: &TlsFiles,
    account: &str,
    to: &str,
    from: Option<&str>,
) -> Result<wire::MigrateReply> {
    let status = |s: tonic::Status| anyhow!("{}", s.message());
    let query = wire::AccountQuery { name: account.to_string(), request_id: String::new() };
    let list = admin.accounts(query).await.map_err(status)?.into_inner();
    let record = list.accounts.first().ok_or_else(|| anyhow!("no account `{account}`"))?;
    let from = from.unwrap_or(&record.primary);
    if !record.replicas.iter().any(|r| r == from) {
        bail!("account `{account}` is not held on node {from} (it is on {})", record.replicas.join(", "));
    }
    let mut source = node_named(admin, tls, from).await?;
    let request = wire::MigrateRequest { account: account.to_string(), to: to.to_string() };
    Ok(source.migrate(request).await.map_err(status)?.into_inner())
}

/// Asks node `node` to delete its copy of `account`, which the group no
/// longer places there, once a replica holds everything in it.
pub async fn purge(
    admin: &mut AdminClient<Channel>,
    tls: &TlsFiles,
    account: &str,
    node: &str,
) -> Result<wire::PurgeReply> {
    let mut holder = node_named(admin, tls, node).await?;
    let query = wire::AccountQuery { name: account.to_string(), request_id: String::new() };
    Ok(holder.purge(query).await.map_err(|s| anyhow!("{}", s.message()))?.into_inner())
}

/// An admin client of the group member called `name`.
async fn node_named(
    admin: &mut AdminClient<Channel>,
    tls: &TlsFiles,
    name: &str,
) -> Result<AdminClient<Channel>> {
    let status = |s: tonic::Status| anyhow!("{}", s.message());
    let group = admin.cluster_status(wire::ClusterRequest::default()).await.map_err(status)?.into_inner();
    let address = group
        .nodes
        .iter()
        .find(|n| n.name == name)
        .map(|n| n.address.clone())
        .ok_or_else(|| anyhow!("no node {name} in the server group"))?;
    let (host, port) = StoreUrl::node(&address).with_context(|| format!("node {name}"))?;
    crate::nodes::admin_client(&host, port, tls).await
}
