//! A bare gRPC client of a node's Store service, for tests that send what
//! the real client never would: another account's ids, malformed ids,
//! corrupt envelopes, broken-off streams, oversized messages.

use std::path::Path;

use coffer_proto::tls::{self, TlsFiles};
use coffer_proto::wire::{self, store_client::StoreClient};
use tokio::runtime::Runtime;
use tonic::Status;
use tonic::transport::Channel;

pub struct RawClient {
    rt: Runtime,
    client: StoreClient<Channel>,
}

impl RawClient {
    /// Connects to 127.0.0.1:`port` with `dir/NAME.crt`, `NAME.key` and `dir/ca.crt`.
    pub fn connect(dir: &Path, name: &str, port: u16) -> Result<RawClient, String> {
        let files = TlsFiles::new(
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
            dir.join("ca.crt"),
        );
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let config = files.client_config().map_err(|e| e.to_string())?;
        let channel = rt.block_on(tls::connect("127.0.0.1", port, config)).map_err(|e| e.to_string())?;
        // Deliberately no raised message limits: the node's are what is tested.
        let client = StoreClient::new(channel)
            .max_encoding_message_size(64 << 20)
            .max_decoding_message_size(tls::MAX_MESSAGE);
        Ok(RawClient { rt, client })
    }

    pub fn login(&mut self, fingerprint: &str, write: bool) -> Result<wire::LoginReply, Status> {
        self.login_as(fingerprint, write, false)
    }

    /// A first login that registers `fingerprint` as the account's keys.
    pub fn register(&mut self, fingerprint: &str) -> Result<wire::LoginReply, Status> {
        self.login_as(fingerprint, true, true)
    }

    fn login_as(
        &mut self,
        fingerprint: &str,
        write: bool,
        register_keys: bool,
    ) -> Result<wire::LoginReply, Status> {
        let request = wire::LoginRequest {
            key_fingerprint: fingerprint.into(),
            write,
            register_keys,
            client_version: "raw".into(),
            ..Default::default()
        };
        Ok(self.rt.block_on(self.client.login(request))?.into_inner())
    }

    pub fn have(&mut self, ids: Vec<Vec<u8>>) -> Result<Vec<bool>, Status> {
        Ok(self.rt.block_on(self.client.have(wire::HaveRequest { ids }))?.into_inner().present)
    }

    pub fn download(&mut self, ids: Vec<Vec<u8>>) -> Result<Vec<wire::StoredObject>, Status> {
        self.rt.block_on(async {
            let mut stream = self.client.download(wire::DownloadRequest { ids }).await?.into_inner();
            let mut out = Vec::new();
            while let Some(batch) = stream.message().await? {
                out.extend(batch.objects);
            }
            Ok(out)
        })
    }

    pub fn upload(&mut self, batches: Vec<wire::ObjectBatch>) -> Result<wire::UploadReply, Status> {
        let stream = tokio_stream::iter(batches);
        Ok(self.rt.block_on(self.client.upload(stream))?.into_inner())
    }

    /// Starts an upload, sends `batches`, then drops the stream mid-way
    /// (the request body ends with an error instead of a clean close).
    pub fn upload_broken_off(
        &mut self,
        batches: Vec<wire::ObjectBatch>,
    ) -> Result<wire::UploadReply, Status> {
        use tokio_stream::StreamExt;
        let failing = tokio_stream::iter(batches.into_iter().map(Ok).chain([Err(())]))
            .map_while(|item: Result<wire::ObjectBatch, ()>| item.ok());
        let mut client = self.client.clone();
        self.rt.block_on(async move {
            let call =
                tokio::spawn(async move { client.upload(failing.chain(tokio_stream::pending())).await });
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            call.abort();
            match call.await {
                Ok(reply) => reply.map(|r| r.into_inner()),
                Err(_) => Err(Status::cancelled("client broke the stream off")),
            }
        })
    }

    /// Opens `count` downloads of `ids` and reads none of them: what each
    /// open call answered, the open streams held until the result is dropped.
    pub fn open_unread(&mut self, ids: &[Vec<u8>], count: usize) -> Vec<Result<Unread, Status>> {
        (0..count)
            .map(|_| {
                let request = wire::DownloadRequest { ids: ids.to_vec() };
                let opened = self.rt.block_on(self.client.download(request));
                opened.map(|r| Unread(r.into_inner()))
            })
            .collect()
    }

    /// Every object reachable from the account's sets (sets, trees,
    /// chunks), by the references their envelopes name in clear.
    pub fn reachable(&mut self) -> Result<Vec<Vec<u8>>, Status> {
        let mut seen: Vec<Vec<u8>> = self.sets()?.into_iter().map(|s| s.id).collect();
        let mut next = seen.clone();
        while !next.is_empty() {
            let mut found = Vec::new();
            for object in self.download(std::mem::take(&mut next))? {
                let decoded =
                    coffer_proto::object::decode(&object.envelope).expect("the node sent a valid object");
                found.extend(decoded.refs.iter().map(|r| r.as_bytes().to_vec()));
            }
            found.retain(|id| !seen.contains(id));
            found.sort();
            found.dedup();
            seen.extend(found.iter().cloned());
            next = found;
        }
        Ok(seen)
    }

    pub fn sets(&mut self) -> Result<Vec<wire::SetInfo>, Status> {
        Ok(self.rt.block_on(self.client.list_sets(wire::ListSetsRequest {}))?.into_inner().sets)
    }

    pub fn forget(&mut self, id: Vec<u8>) -> Result<wire::ForgetSetReply, Status> {
        Ok(self.rt.block_on(self.client.forget_set(wire::ForgetSetRequest { id }))?.into_inner())
    }
}

/// An open download nobody reads.
pub struct Unread(#[allow(dead_code)] tonic::Streaming<wire::ObjectBatch>);
