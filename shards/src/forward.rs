//! Requests a member that does not serve writes hands to the cluster
//! leader, over the peer transport's calls: writes (as one `TxnRequest`),
//! lease grant/renew/revoke/time-to-live, compaction, and the ReadIndex a
//! linearizable read on a follower needs. The leader answers from its own
//! engine, never forwarding again (a leader that stopped serving answers
//! with the error its client would get).
//!
//! Bodies are protobuf for transactions and little-endian integers
//! otherwise; an error travels as its etcd message and is read back into
//! the same `Error`.

use prost::Message as _;

use ferrokv_raft::peer::IncomingCall;
use ferrokv_wire::pb::etcdserverpb as pb;

use crate::{Engine, Error};

/// Bound on forwarded requests waiting for the leader's core; the peer
/// transport makes callers wait for room (within their timeout).
pub const CALLS_PENDING_MAX: usize = 1024;

pub const TXN: u8 = 1;
pub const LEASE_GRANT: u8 = 2;
pub const LEASE_RENEW: u8 = 3;
pub const LEASE_REVOKE: u8 = 4;
pub const LEASE_TTL: u8 = 5;
pub const COMPACT: u8 = 6;
pub const READ_INDEX: u8 = 7;
/// A piece of a shard's snapshot file: (shard, raft index, offset).
pub const SNAPSHOT_CHUNK: u8 = 8;
/// A membership change request (the server's bytes); the reply is the
/// change made.
pub const MEMBERS: u8 = 9;
/// An auth record (`AuthRecord`'s bytes); the reply is the auth revision
/// it left on the leader.
pub const AUTH: u8 = 10;
/// A write as `TXN`, after the auth revision (i64) the member that
/// received it checked its permissions at.
pub const TXN_CHECKED: u8 = 11;

pub fn ints(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|i| i.to_le_bytes()).collect()
}

pub fn read_ints(b: &[u8], n: usize) -> Result<Vec<i64>, Error> {
    if b.len() < n * 8 {
        return Err(Error::Internal("forwarded request cut short".into()));
    }
    Ok(b.chunks_exact(8)
        .take(n)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            i64::from_le_bytes(a)
        })
        .collect())
}

/// An error as it travels between members: its etcd message.
pub fn error_to_wire(e: &Error) -> String {
    e.to_string()
}

/// The error a message names; one this version does not know stays
/// `Internal` with the message as sent.
pub fn error_from_wire(msg: &str) -> Error {
    let known = [
        Error::Compacted,
        Error::FutureRevision,
        Error::LeaseNotFound,
        Error::LeaseExists,
        Error::LeaseTtlTooLarge,
        Error::KeyNotFound,
        Error::LeaderChanged,
        Error::Timeout,
        Error::NotLeader,
        Error::LeaderTransferTimeout,
        Error::HandedOver,
    ];
    for e in known {
        if e.to_string() == msg {
            return e;
        }
    }
    if let Some(e) = crate::auth::AuthError::from_message(msg) {
        return Error::Auth(e);
    }
    if crate::membership::REFUSALS.contains(&msg) {
        return Error::Membership(msg.to_string());
    }
    Error::Internal(msg.strip_prefix("etcdserver: ").unwrap_or(msg).to_string())
}

/// Answers one forwarded request on the leader.
pub async fn serve(engine: &Engine, call: IncomingCall) {
    let r = answer(engine, call.kind, &call.body).await;
    let _ = call.reply.send(r.map_err(|e| error_to_wire(&e)));
}

async fn answer(engine: &Engine, kind: u8, body: &[u8]) -> Result<Vec<u8>, Error> {
    match kind {
        TXN => {
            let t = pb::TxnRequest::decode(body)
                .map_err(|e| Error::Internal(format!("forwarded txn: {e}")))?;
            let resp = engine.txn_here(t).await?;
            Ok(resp.encode_to_vec())
        }
        TXN_CHECKED => {
            let rev = read_ints(body, 1)?[0] as u64;
            engine.stale_auth(rev)?;
            let t = pb::TxnRequest::decode(&body[8..])
                .map_err(|e| Error::Internal(format!("forwarded txn: {e}")))?;
            let resp = engine.txn_here(t).await?;
            Ok(resp.encode_to_vec())
        }
        LEASE_GRANT => {
            let v = read_ints(body, 2)?;
            let (ttl, rev) = engine.lease_grant_here(v[0], v[1]).await?;
            Ok(ints(&[ttl, rev]))
        }
        LEASE_RENEW => {
            let v = read_ints(body, 1)?;
            Ok(ints(&[engine.lease_renew_here(v[0]).await?]))
        }
        LEASE_REVOKE => {
            let v = read_ints(body, 1)?;
            Ok(ints(&[engine.lease_revoke_here(v[0]).await?]))
        }
        LEASE_TTL => {
            let v = read_ints(body, 2)?;
            match engine.lease_time_to_live_here(v[0], v[1] != 0).await? {
                None => Ok(Vec::new()),
                Some((granted, remaining, keys)) => {
                    let mut out = ints(&[granted, remaining, keys.len() as i64]);
                    for k in keys {
                        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
                        out.extend_from_slice(&k);
                    }
                    Ok(out)
                }
            }
        }
        COMPACT => {
            let v = read_ints(body, 1)?;
            Ok(ints(&[engine.compact_here(v[0]).await?]))
        }
        READ_INDEX => {
            let visible = engine.read_index_here().await?;
            // With it the compaction point (see `Engine::linearizable`)
            // and the auth revision (see `Engine::auth_read_index`).
            Ok(ints(&[
                visible,
                engine.sequencer().compact_revision(),
                engine.auth().revision() as i64,
            ]))
        }
        MEMBERS => Ok(engine.change_members_here(body, true).await?.encode()),
        AUTH => {
            let rec = crate::auth_view::AuthRecord::decode(body)
                .map_err(|e| Error::Internal(format!("forwarded auth record: {e}")))?;
            Ok(ints(&[engine.auth_here(rec).await? as i64]))
        }
        SNAPSHOT_CHUNK => {
            let v = read_ints(body, 3)?;
            engine
                .snapshot_chunk(v[0] as u32, v[1] as u64, v[2] as u64)
                .await
        }
        other => Err(Error::Internal(format!(
            "unknown forwarded request {other}"
        ))),
    }
}

/// Reads the reply of [`LEASE_TTL`].
pub fn read_ttl(b: &[u8]) -> Result<Option<crate::kv::LeaseLife>, Error> {
    if b.is_empty() {
        return Ok(None);
    }
    let v = read_ints(b, 3)?;
    let mut keys = Vec::new();
    let mut rest = &b[24..];
    for _ in 0..v[2].max(0) {
        if rest.len() < 4 {
            return Err(Error::Internal("forwarded lease keys cut short".into()));
        }
        let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() < 4 + n {
            return Err(Error::Internal("forwarded lease keys cut short".into()));
        }
        keys.push(rest[4..4 + n].to_vec());
        rest = &rest[4 + n..];
    }
    Ok(Some((v[0], v[1], keys)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_come_back_as_themselves() {
        for e in [
            Error::LeaseNotFound,
            Error::Compacted,
            Error::LeaderChanged,
            Error::Timeout,
            Error::Internal("disk on fire".into()),
            Error::Membership(crate::membership::MEMBER_NOT_FOUND.into()),
        ] {
            assert_eq!(error_from_wire(&error_to_wire(&e)), e);
        }
    }

    #[test]
    fn ints_round_trip_and_short_input_is_refused() {
        let b = ints(&[1, -2, i64::MAX]);
        assert_eq!(read_ints(&b, 3).unwrap(), vec![1, -2, i64::MAX]);
        assert!(read_ints(&b[..20], 3).is_err());
        assert!(read_ttl(&b[..10]).is_err());
    }
}
