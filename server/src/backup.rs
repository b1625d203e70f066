//! Maintenance RPCs over the whole store: Snapshot (the backup stream
//! `etcdctl snapshot save` writes to a file), Defragment, Hash, HashKV and
//! MoveLeader, as etcd 3.4's `v3rpc/maintenance.go` answers them.

use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;
use ferrokv_shards::backup;
use ferrokv_wire::conn::ResponseSink;
use ferrokv_wire::grpc::{decode, Code, Status};
use ferrokv_wire::pb::etcdserverpb as pb;
use ferrokv_wire::Message;
use sha2::Digest;

use crate::errors;
use crate::service::Service;

/// Bytes per `SnapshotResponse.blob` (etcd sends 32 KiB).
const SNAPSHOT_CHUNK_BYTES: usize = 64 * 1024;

/// The part files of one backup; removed however the stream ends.
struct Parts(Vec<PathBuf>);

impl Drop for Parts {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `/etcdserverpb.Maintenance/Snapshot`: one consistent backup of every
/// shard (`ferrokv_shards::backup`), streamed in chunks with the bytes
/// still to come, then its SHA-256, as etcd streams its database.
pub async fn snapshot(
    svc: Rc<Service>,
    requests: async_channel::Receiver<Bytes>,
    sink: ResponseSink,
) -> Status {
    let first = match requests.recv().await {
        Ok(msg) => msg,
        Err(_) => return Status::new(Code::Ok, ""),
    };
    if let Err(status) = decode::<pb::SnapshotRequest>(first) {
        return status;
    }
    let (header, parts) = match svc.engine.backup().await {
        Ok(b) => b,
        Err(e) => return errors::engine(e),
    };
    let parts = Parts(parts);
    let mut files = Vec::with_capacity(parts.0.len());
    let mut content = backup::HEADER_LEN as u64;
    for p in &parts.0 {
        let file = match glommio::io::BufferedFile::open(p).await {
            Ok(f) => f,
            Err(e) => return internal(p, e),
        };
        let size = match file.file_size().await {
            Ok(s) => s,
            Err(e) => return internal(p, e),
        };
        content += 8 + size;
        files.push((file, size));
    }
    let padding = backup::padding(content);
    let total = content + padding + backup::HASH_LEN as u64;
    let mut hasher = backup::hasher();
    let mut stream = Stream {
        svc: &svc,
        sink: &sink,
        remaining: total,
    };
    let head = header.encode();
    hasher.update(&head);
    if !stream.send(head).await {
        return canceled();
    }
    for ((file, size), path) in files.iter().zip(&parts.0) {
        let len = size.to_le_bytes().to_vec();
        hasher.update(&len);
        if !stream.send(len).await {
            return canceled();
        }
        let mut pos = 0u64;
        while pos < *size {
            let want = SNAPSHOT_CHUNK_BYTES.min((size - pos) as usize);
            let chunk = match file.read_at(pos, want).await {
                Ok(c) if !c.is_empty() => c.to_vec(),
                Ok(_) => return internal(path, "file shrank while streaming"),
                Err(e) => return internal(path, e),
            };
            pos += chunk.len() as u64;
            hasher.update(&chunk);
            if !stream.send(chunk).await {
                return canceled();
            }
        }
    }
    for (file, _) in files {
        let _ = file.close().await;
    }
    let pad = vec![0u8; padding as usize];
    hasher.update(&pad);
    if !pad.is_empty() && !stream.send(pad).await {
        return canceled();
    }
    let hash = hasher.finalize().to_vec();
    if !stream.send(hash).await {
        return canceled();
    }
    log::info!(
        "sent a backup at revision {} ({total} bytes, {} shards)",
        header.revision,
        header.shards
    );
    Status::new(Code::Ok, "")
}

struct Stream<'a> {
    svc: &'a Service,
    sink: &'a ResponseSink,
    remaining: u64,
}

impl Stream<'_> {
    async fn send(&mut self, blob: Vec<u8>) -> bool {
        self.remaining = self.remaining.saturating_sub(blob.len() as u64);
        let resp = pb::SnapshotResponse {
            header: self.svc.header(self.svc.engine.sequencer().visible()).await,
            remaining_bytes: self.remaining,
            blob: Bytes::from(blob),
        };
        self.sink.send(Bytes::from(resp.encode_to_vec())).await
    }
}

fn canceled() -> Status {
    Status::new(Code::Canceled, "context canceled")
}

fn internal(path: &std::path::Path, e: impl std::fmt::Display) -> Status {
    log::error!("backup part {}: {e}", path.display());
    Status::new(Code::Internal, format!("etcdserver: snapshot: {e}"))
}

pub async fn defragment(svc: &Service, msg: Bytes) -> Result<pb::DefragmentResponse, Status> {
    let _: pb::DefragmentRequest = decode(msg)?;
    svc.engine.defragment().await.map_err(errors::engine)?;
    // etcd 3.4 answers an empty DefragmentResponse, header unset (as for
    // MoveLeader; Status, Hash, HashKV and Snapshot get one): the gateway
    // shows `{}`.
    Ok(pb::DefragmentResponse { header: None })
}

/// A CRC-32C over every live key at `revision` with all its fields, in
/// key order. etcd hashes its bbolt pages, so the numbers differ from
/// etcd's; what they share is the use: two members (or two points in
/// time) with the same data at a revision have the same hash.
async fn hash_at(svc: &Service, revision: i64) -> Result<u32, Status> {
    let r = pb::RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        revision,
        ..Default::default()
    };
    let resp = svc.engine.range(&r).await.map_err(errors::engine)?;
    let mut crc = 0u32;
    for kv in &resp.kvs {
        for field in [
            &kv.key[..],
            &kv.value[..],
            &kv.create_revision.to_le_bytes(),
            &kv.mod_revision.to_le_bytes(),
            &kv.version.to_le_bytes(),
            &kv.lease.to_le_bytes(),
        ] {
            crc = crc32c::crc32c_append(crc, &(field.len() as u64).to_le_bytes());
            crc = crc32c::crc32c_append(crc, field);
        }
    }
    Ok(crc)
}

pub async fn hash_kv(svc: &Service, msg: Bytes) -> Result<pb::HashKvResponse, Status> {
    let r: pb::HashKvRequest = decode(msg)?;
    let current = svc.engine.sequencer().visible();
    let revision = if r.revision <= 0 { current } else { r.revision };
    let hash = hash_at(svc, revision).await?;
    Ok(pb::HashKvResponse {
        header: svc.header(current).await,
        hash,
        compact_revision: svc.engine.sequencer().compact_revision(),
    })
}

pub async fn hash(svc: &Service, msg: Bytes) -> Result<pb::HashResponse, Status> {
    let _: pb::HashRequest = decode(msg)?;
    let current = svc.engine.sequencer().visible();
    let hash = hash_at(svc, current).await?;
    Ok(pb::HashResponse {
        header: svc.header(current).await,
        hash,
    })
}

/// One member, always the leader: moving leadership to itself is done at
/// once; any other id is not a member (etcd's ErrBadLeaderTransferee).
/// etcd's reply carries no header.
pub async fn move_leader(svc: &Service, msg: Bytes) -> Result<pb::MoveLeaderResponse, Status> {
    let r: pb::MoveLeaderRequest = decode(msg)?;
    // etcd checks leadership first (the maintenance server), then the
    // transferee (a voting member).
    if !svc.engine.leadership().serving() {
        return Err(errors::engine(ferrokv_shards::Error::NotLeader));
    }
    let known = svc
        .membership
        .members()
        .iter()
        .any(|m| m.id == r.target_id && !m.is_learner);
    if !known {
        return Err(Status::new(
            Code::FailedPrecondition,
            "etcdserver: bad leader transferee",
        ));
    }
    svc.engine
        .move_leader(r.target_id)
        .await
        .map_err(errors::engine)?;
    Ok(pb::MoveLeaderResponse { header: None })
}
