//! The workloads' requests, sent as plain etcd v3 gRPC calls: the message
//! types come from `ferrokv_wire::pb` (prost), the call is tonic's generic
//! `Grpc::unary` with the method path, so no second copy of the protos and no
//! generated client stubs exist.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use ferrokv_wire::pb::etcdserverpb::{
    compare, request_op, response_op, Compare, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::Status;

use crate::args::{Args, Workload};

/// One gRPC unary call with a deadline that holds even if the server never
/// answers (the `grpc-timeout` header tells the server; the local timer is
/// what bounds the run).
async fn unary<Req, Resp>(
    channel: &Channel,
    path: &'static str,
    req: Req,
    timeout: Duration,
) -> Result<Resp, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let call = async {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
        let mut request = tonic::Request::new(req);
        request.set_timeout(timeout);
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        grpc.unary(request, PathAndQuery::from_static(path), codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| {
                // tonic enforces the `grpc-timeout` it sends and reports
                // expiry as Cancelled; a caller's deadline is
                // DeadlineExceeded in every other gRPC client (etcd's too).
                if status.code() == tonic::Code::Cancelled && status.message() == "Timeout expired"
                {
                    Status::deadline_exceeded(format!(
                        "no response within {timeout:?} (client deadline)"
                    ))
                } else {
                    status
                }
            })
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no response within {timeout:?} (client deadline)"
        ))),
    }
}

pub async fn put(
    channel: &Channel,
    key: Bytes,
    value: Bytes,
    timeout: Duration,
) -> Result<PutResponse, Status> {
    let req = PutRequest {
        key,
        value,
        ..Default::default()
    };
    unary(channel, "/etcdserverpb.KV/Put", req, timeout).await
}

/// The end of the range holding every key that starts with `prefix`
/// (etcd's `clientv3.GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end.into();
        }
    }
    // All 0xff (or empty): every key from the start.
    Bytes::from_static(&[0])
}

/// What a successful request reports besides its latency.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// A txn-put whose compare failed (another writer, or a stale revision).
    pub compare_failed: bool,
}

/// Per-client workload state: key choice and, for txn-put, the last
/// mod_revision this client saw for each of its keys.
pub struct Client {
    workload: Workload,
    args: Args,
    value: Bytes,
    rng: u64,
    /// txn-put: this client's index; it owns keys `n` with
    /// `n % clients == index`, so clients never race each other (conflicts
    /// then only come from keys written before the run, learnt on first use).
    index: u64,
    next_sequential: u64,
    mod_revisions: HashMap<u64, i64>,
}

impl Client {
    pub fn new(args: &Args, index: usize, value: Bytes) -> Self {
        Client {
            workload: args.workload,
            args: args.clone(),
            value,
            // splitmix-seeded xorshift state; never zero.
            rng: splitmix(args.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1,
            index: index as u64,
            next_sequential: index as u64,
            mod_revisions: HashMap::new(),
        }
    }

    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    pub fn key(&self, n: u64) -> Bytes {
        let width = self.args.key_size - self.args.key_prefix.len();
        format!("{}{n:0width$}", self.args.key_prefix).into()
    }

    fn next_key_number(&mut self) -> u64 {
        let space = self.args.key_space;
        match self.workload {
            Workload::TxnPut => {
                let clients = self.args.clients as u64;
                // Keys owned by this client: index, index + clients, ...
                let owned = space.saturating_sub(self.index).div_ceil(clients);
                let owned = owned.max(1);
                let slot = if self.args.sequential_keys {
                    let s = self.next_sequential % owned;
                    self.next_sequential += 1;
                    s
                } else {
                    self.random() % owned
                };
                (self.index + slot * clients) % space
            }
            _ => {
                if self.args.sequential_keys {
                    let n = self.next_sequential % space;
                    self.next_sequential += self.args.clients as u64;
                    n
                } else {
                    self.random() % space
                }
            }
        }
    }

    /// Runs one request of the workload.
    pub async fn op(&mut self, channel: &Channel, timeout: Duration) -> Result<Outcome, Status> {
        let n = self.next_key_number();
        let key = self.key(n);
        match self.workload {
            Workload::Put => put(channel, key, self.value.clone(), timeout)
                .await
                .map(|_| Outcome::default()),
            Workload::Range => {
                let req = if self.args.prefix {
                    RangeRequest {
                        key,
                        range_end: prefix_end(self.args.key_prefix.as_bytes()),
                        limit: self.args.limit,
                        serializable: self.args.serializable,
                        ..Default::default()
                    }
                } else {
                    RangeRequest {
                        key,
                        serializable: self.args.serializable,
                        ..Default::default()
                    }
                };
                unary::<_, RangeResponse>(channel, "/etcdserverpb.KV/Range", req, timeout)
                    .await
                    .map(|_| Outcome::default())
            }
            Workload::TxnPut => {
                let last = self.mod_revisions.get(&n).copied().unwrap_or(0);
                let req = TxnRequest {
                    compare: vec![Compare {
                        result: compare::CompareResult::Equal as i32,
                        target: compare::CompareTarget::Mod as i32,
                        key: key.clone(),
                        target_union: Some(compare::TargetUnion::ModRevision(last)),
                        ..Default::default()
                    }],
                    success: vec![RequestOp {
                        request: Some(request_op::Request::RequestPut(PutRequest {
                            key: key.clone(),
                            value: self.value.clone(),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![RequestOp {
                        request: Some(request_op::Request::RequestRange(RangeRequest {
                            key,
                            ..Default::default()
                        })),
                    }],
                };
                let resp: TxnResponse =
                    unary(channel, "/etcdserverpb.KV/Txn", req, timeout).await?;
                if resp.succeeded {
                    let rev = resp.header.map_or(0, |h| h.revision);
                    self.mod_revisions.insert(n, rev);
                    Ok(Outcome::default())
                } else {
                    // Kubernetes re-reads and retries; here the next request
                    // for this key uses the revision just learnt.
                    let current = resp
                        .responses
                        .into_iter()
                        .find_map(|r| match r.response {
                            Some(response_op::Response::ResponseRange(rr)) => {
                                Some(rr.kvs.first().map_or(0, |kv| kv.mod_revision))
                            }
                            _ => None,
                        })
                        .unwrap_or(0);
                    self.mod_revisions.insert(n, current);
                    Ok(Outcome {
                        compare_failed: true,
                    })
                }
            }
        }
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A value of `len` bytes that does not compress to nothing.
pub fn value_bytes(len: usize, seed: u64) -> Bytes {
    let mut s = splitmix(seed) | 1;
    (0..len)
        .map(|_| {
            s = splitmix(s);
            b'a' + (s % 26) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(&prefix_end(b"/bench/")[..], b"/bench0");
        assert_eq!(&prefix_end(b"a\xff")[..], b"b");
        assert_eq!(&prefix_end(b"")[..], b"\0");
    }

    #[test]
    fn keys_have_the_requested_size_and_txn_keys_are_owned() {
        let args = crate::args::parse(
            &"txn-put --clients 3 --key-space 10 --key-size 12"
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        for index in 0..3 {
            let mut c = Client::new(&args, index, Bytes::new());
            for _ in 0..50 {
                let n = c.next_key_number();
                assert!(n < 10);
                assert_eq!(n % 3, index as u64);
                assert_eq!(c.key(n).len(), 12);
            }
        }
    }
}
