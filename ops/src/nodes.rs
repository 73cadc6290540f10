//! Reaching the server group's nodes. A command goes to the first of the
//! configured nodes that answers (the admin tool fails over as the client
//! does; account changes reach the leader through whichever node that is),
//! and group-wide reports ask every member and merge what each says,
//! marking those that did not answer.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use coffer_proto::StoreUrl;
use coffer_proto::tls::{self, MAX_MESSAGE, TlsFiles};
use coffer_proto::wire::{self, admin_client::AdminClient};
use tonic::transport::Channel;

/// How long a node has to answer before the next is tried, or marked.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

pub async fn admin_client(host: &str, port: u16, tls: &TlsFiles) -> Result<AdminClient<Channel>> {
    let channel = tls::connect(host, port, tls.client_config()?).await?;
    Ok(AdminClient::new(channel).max_decoding_message_size(MAX_MESSAGE))
}

/// The first of `urls` (coffer://HOST:PORT) that answers, in order.
pub async fn first_answering(urls: &[String], tls: &TlsFiles) -> Result<AdminClient<Channel>> {
    let mut tried = Vec::new();
    for url in urls {
        let StoreUrl::Remote { host, port } = StoreUrl::parse(url)? else {
            bail!("`{url}` is not a node address (coffer://HOST:PORT)");
        };
        match within(admin_client(&host, port, tls)).await {
            Ok(client) => return Ok(client),
            Err(e) => tried.push(format!("{url}: {e:#}")),
        }
    }
    bail!("no node answered: {}", tried.join("; "))
}

async fn within<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(ANSWER_WITHIN, work)
        .await
        .map_err(|_| anyhow!("no answer within {ANSWER_WITHIN:?}"))?
}

/// What one member of the group answered, or why it did not.
pub struct Answer<T> {
    pub node: String,
    pub reply: Result<T, String>,
}

/// Asks every member of the group, as `admin`'s node knows it, with `ask`;
/// a node that is not in a group yet is asked alone.
pub async fn ask_every_node<T, F, Fut>(
    admin: &mut AdminClient<Channel>,
    tls: &TlsFiles,
    ask: F,
) -> Result<Vec<Answer<T>>>
where
    F: Fn(AdminClient<Channel>) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let status = |s: tonic::Status| anyhow!("{}", s.message());
    let group = admin.cluster_status(wire::ClusterRequest::default()).await.map_err(status)?.into_inner();
    if group.nodes.is_empty() {
        let node = admin.status(wire::StatusRequest {}).await.map_err(status)?.into_inner().node;
        let reply = ask(admin.clone()).await.map_err(|s| s.message().to_string());
        return Ok(vec![Answer { node, reply }]);
    }
    let mut answers = Vec::new();
    for member in group.nodes {
        let reply = async {
            // The node that answered is asked on the connection open to it.
            let client = if member.name == group.reporter {
                admin.clone()
            } else {
                let (host, port) = StoreUrl::node(&member.address).with_context(|| member.name.clone())?;
                within(admin_client(&host, port, tls)).await?
            };
            within(async { ask(client).await.map_err(status) }).await
        };
        let reply = reply.await.map_err(|e| format!("{e:#}"));
        answers.push(Answer { node: member.name, reply });
    }
    Ok(answers)
}
