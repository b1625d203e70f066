//! `/etcdserverpb.Watch/Watch`: one bidirectional stream, many watchers
//! (etcd `v3rpc/watch.go`). Requests create and cancel watchers on this
//! core's watch hub; the hub queues their events on the stream; this task
//! sends them in order, with the stream's control responses in between.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrokv_shards::watch::{KeyRange, WatchError, WatchHub, WatchOut, WatchSpec, WatchStream};
use ferrokv_wire::conn::{Caller, ResponseSink, GRPC_OVERHEAD_BYTES};
use ferrokv_wire::grpc::{decode, Code, Status};
use ferrokv_wire::pb::etcdserverpb as pb;
use ferrokv_wire::Message;

use crate::service::Service;

/// Control responses (created, canceled, progress) a stream may have queued
/// before it stops reading requests: a client that sends requests but does
/// not read responses is slowed down, not buffered without end.
pub const WATCH_CONTROL_PENDING_MAX: usize = 64;
/// etcd's default `progressReportInterval`.
pub const WATCH_PROGRESS_INTERVAL: Duration = Duration::from_secs(600);
/// After the client half-closes, how often to check that it is still there
/// (events keep flowing until it goes away, as in etcd).
const WATCH_CLOSED_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// etcd's `clientv3.InvalidWatchID`.
const INVALID_WATCH_ID: i64 = -1;

struct Local {
    hub_key: u64,
    prev_kv: bool,
    fragment: bool,
}

/// A stream's watchers; all are released from the hub when it ends,
/// however it ends.
struct StreamState {
    hub: Rc<WatchHub>,
    queue: Rc<WatchStream>,
    watchers: HashMap<i64, Local>,
    /// Watchers with progress_notify, and whether they had no events since
    /// the last tick (etcd `sws.progress`).
    progress: HashMap<i64, bool>,
    next_id: i64,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        for l in self.watchers.values() {
            self.hub.cancel(l.hub_key);
        }
    }
}

enum Step {
    Request(Option<Bytes>),
    Out(WatchOut),
    Tick,
}

pub async fn serve(
    svc: Rc<Service>,
    caller: Caller,
    requests: async_channel::Receiver<Bytes>,
    sink: ResponseSink,
) -> Status {
    let mut s = StreamState {
        hub: svc.hub.clone(),
        queue: Rc::new(WatchStream::default()),
        watchers: HashMap::new(),
        progress: HashMap::new(),
        next_id: 0,
    };
    let mut input_open = true;
    let mut next_progress = Instant::now() + WATCH_PROGRESS_INTERVAL;
    loop {
        let reading = input_open && s.queue.len() < WATCH_CONTROL_PENDING_MAX;
        let tick_in = if input_open {
            next_progress.saturating_duration_since(Instant::now())
        } else {
            WATCH_CLOSED_CHECK_INTERVAL.min(next_progress.saturating_duration_since(Instant::now()))
        };
        let queue = s.queue.clone();
        let step = futures_lite::future::or(
            futures_lite::future::or(
                async {
                    if reading {
                        Step::Request(requests.recv().await.ok())
                    } else {
                        std::future::pending().await
                    }
                },
                async { Step::Out(queue.next().await) },
            ),
            async {
                glommio::timer::sleep(tick_in).await;
                Step::Tick
            },
        )
        .await;
        match step {
            Step::Request(None) => input_open = false,
            Step::Request(Some(msg)) => {
                let req: pb::WatchRequest = match decode(msg) {
                    Ok(r) => r,
                    Err(status) => return status,
                };
                handle_request(&svc, &caller, &mut s, req);
            }
            Step::Out(out) => {
                if !send_out(&svc, &mut s, out, &sink).await {
                    return Status::new(Code::Canceled, "context canceled");
                }
            }
            Step::Tick => {
                if sink.is_closed() {
                    return Status::new(Code::Canceled, "context canceled");
                }
                if Instant::now() >= next_progress {
                    next_progress = Instant::now() + WATCH_PROGRESS_INTERVAL;
                    progress_tick(&mut s);
                }
            }
        }
    }
}

fn handle_request(svc: &Service, caller: &Caller, s: &mut StreamState, req: pb::WatchRequest) {
    use pb::watch_request::RequestUnion;
    match req.request_union {
        Some(RequestUnion::CreateRequest(c)) => {
            let header_rev = svc.engine.sequencer().visible();
            // etcd: read permission over the range at creation; refused,
            // the watch is created and canceled at once, with the reason.
            if let Some(reason) = crate::auth::watch_refusal(svc, caller, &c) {
                s.queue.push(WatchOut {
                    watch_id: INVALID_WATCH_ID,
                    header_rev,
                    created: true,
                    canceled: true,
                    cancel_reason: reason,
                    ..WatchOut::default()
                });
                return;
            }
            let created = create(s, &c);
            let (watch_id, reason) = match created {
                Ok(id) => (id, None),
                Err(e) => (INVALID_WATCH_ID, Some(e.to_string())),
            };
            s.queue.push(WatchOut {
                watch_id,
                header_rev,
                created: true,
                canceled: reason.is_some(),
                cancel_reason: reason.unwrap_or_default(),
                ..WatchOut::default()
            });
        }
        Some(RequestUnion::CancelRequest(c)) => {
            // etcd answers only a cancel of a watcher it has.
            if let Some(l) = s.watchers.remove(&c.watch_id) {
                s.hub.cancel(l.hub_key);
                s.progress.remove(&c.watch_id);
                s.queue.push(WatchOut {
                    watch_id: c.watch_id,
                    header_rev: svc.engine.sequencer().visible(),
                    canceled: true,
                    ..WatchOut::default()
                });
            }
        }
        Some(RequestUnion::ProgressRequest(_)) => {
            // etcd 3.4: the current revision, for no watcher in particular.
            // ferrokv reports the revision its hub has dispatched, so that
            // the notification never runs ahead of events still to come.
            s.queue.push(WatchOut {
                watch_id: INVALID_WATCH_ID,
                header_rev: s.hub.rev(),
                ..WatchOut::default()
            });
        }
        None => {}
    }
}

fn create(s: &mut StreamState, c: &pb::WatchCreateRequest) -> Result<i64, WatchError> {
    let range = KeyRange::from_request(&c.key, &c.range_end)?;
    // etcd's AutoWatchID is 0: ids are assigned from 0 upward, skipping ids
    // the client chose.
    let id = if c.watch_id == 0 {
        while s.watchers.contains_key(&s.next_id) {
            s.next_id += 1;
        }
        s.next_id += 1;
        s.next_id - 1
    } else if s.watchers.contains_key(&c.watch_id) {
        return Err(WatchError::DuplicateId);
    } else {
        c.watch_id
    };
    let no_put = pb::watch_create_request::FilterType::Noput as i32;
    let no_delete = pb::watch_create_request::FilterType::Nodelete as i32;
    let spec = WatchSpec {
        range,
        start_rev: c.start_revision,
        no_put: c.filters.contains(&no_put),
        no_delete: c.filters.contains(&no_delete),
        prev_kv: c.prev_kv,
    };
    let hub_key = s.hub.watch(&s.queue, id, spec);
    s.watchers.insert(
        id,
        Local {
            hub_key,
            prev_kv: c.prev_kv,
            fragment: c.fragment,
        },
    );
    if c.progress_notify {
        s.progress.insert(id, true);
    }
    Ok(id)
}

/// etcd's progress ticker: a watcher with progress_notify that had no
/// events during the last interval hears the current revision.
fn progress_tick(s: &mut StreamState) {
    for (id, idle) in s.progress.iter_mut() {
        if *idle {
            if let Some(rev) = s.watchers.get(id).and_then(|l| s.hub.progress(l.hub_key)) {
                s.queue.push(WatchOut {
                    watch_id: *id,
                    header_rev: rev,
                    ..WatchOut::default()
                });
            }
        }
        *idle = true;
    }
}

/// Send one queued response (split into fragments when asked and needed);
/// false once the client is gone.
async fn send_out(svc: &Service, s: &mut StreamState, out: WatchOut, sink: &ResponseSink) -> bool {
    if let Some(key) = out.hub_key {
        s.hub.sent(key, out.events.len());
    }
    let (prev_kv, fragment) = s
        .watchers
        .get(&out.watch_id)
        .filter(|l| Some(l.hub_key) == out.hub_key)
        .map_or((false, false), |l| (l.prev_kv, l.fragment));
    if out.compact_revision != 0 {
        // The hub dropped this watcher.
        s.watchers.remove(&out.watch_id);
        s.progress.remove(&out.watch_id);
    }
    if !out.events.is_empty() {
        if let Some(idle) = s.progress.get_mut(&out.watch_id) {
            *idle = false;
        }
    }
    let mut resp = pb::WatchResponse {
        header: svc.header(out.header_rev).await,
        watch_id: out.watch_id,
        created: out.created,
        canceled: out.canceled,
        compact_revision: out.compact_revision,
        cancel_reason: out.cancel_reason,
        fragment: false,
        events: Vec::new(),
    };
    let events: Vec<Bytes> = out.events.iter().map(|e| e.encoded(prev_kv)).collect();
    let limit = svc.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let whole = with_encoded_events(&resp, &events);
    if !fragment || events.len() < 2 || whole.len() < limit {
        return sink.send(whole).await;
    }
    resp.events = out.events.iter().map(|e| e.to_pb(prev_kv)).collect();
    for part in fragments(resp, fragment, limit) {
        if !sink.send(Bytes::from(part.encode_to_vec())).await {
            return false;
        }
    }
    true
}

/// `WatchResponse.events` field number.
const EVENTS_FIELD: u32 = 11;

/// The response with `events` (each an encoded `mvccpb.Event`, shared by
/// every watcher of the core) appended as its repeated field: protobuf
/// allows fields in any order, so the event bytes are copied, not
/// re-encoded, per watcher.
fn with_encoded_events(resp: &pb::WatchResponse, events: &[Bytes]) -> Bytes {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
    let events_len: usize = events
        .iter()
        .map(|e| 1 + encoded_len_varint(e.len() as u64) + e.len())
        .sum();
    let mut buf = Vec::with_capacity(resp.encoded_len() + events_len);
    // Encoding into a Vec cannot run out of room.
    let _ = resp.encode(&mut buf);
    for e in events {
        encode_key(EVENTS_FIELD, WireType::LengthDelimited, &mut buf);
        encode_varint(e.len() as u64, &mut buf);
        buf.extend_from_slice(e);
    }
    Bytes::from(buf)
}

/// etcd `sendFragments`: split only when asked, when there are at least two
/// events and the whole would reach `limit`; every part but the last has
/// `fragment` set; each part holds at least one event.
fn fragments(resp: pb::WatchResponse, fragment: bool, limit: usize) -> Vec<pb::WatchResponse> {
    if !fragment || resp.events.len() < 2 || resp.encoded_len() < limit {
        return vec![resp];
    }
    let mut template = resp.clone();
    template.events = Vec::new();
    template.fragment = true;
    let mut out = Vec::new();
    let mut events = resp.events.into_iter().peekable();
    while events.peek().is_some() {
        let mut cur = template.clone();
        while let Some(ev) = events.peek() {
            cur.events.push(ev.clone());
            if cur.events.len() > 1 && cur.encoded_len() >= limit {
                cur.events.pop();
                break;
            }
            events.next();
        }
        if events.peek().is_none() {
            cur.fragment = false;
        }
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrokv_wire::pb::mvccpb;

    fn ev(key: &str, value_len: usize) -> mvccpb::Event {
        mvccpb::Event {
            r#type: 0,
            kv: Some(mvccpb::KeyValue {
                key: Bytes::from(key.to_string()),
                value: Bytes::from(vec![b'x'; value_len]),
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    /// The shared-bytes encoding is the same message prost would encode.
    #[test]
    fn encoded_events_decode_as_the_whole_response() {
        use ferrokv_mvcc::{Event, EventKind, KeyValue};
        use ferrokv_shards::watch::SharedEvent;
        let kv = |k: &str, v: &str| KeyValue {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            lease: 7,
        };
        let shared = [
            SharedEvent::new(Event {
                kind: EventKind::Put,
                kv: kv("a", "1"),
                prev_kv: Some(kv("a", "0")),
            }),
            SharedEvent::new(Event {
                kind: EventKind::Delete,
                kv: kv("b", ""),
                prev_kv: None,
            }),
        ];
        for prev_kv in [false, true] {
            let mut resp = pb::WatchResponse {
                header: Some(pb::ResponseHeader {
                    revision: 3,
                    ..Default::default()
                }),
                watch_id: 5,
                ..Default::default()
            };
            let bytes: Vec<Bytes> = shared.iter().map(|e| e.encoded(prev_kv)).collect();
            let got = with_encoded_events(&resp, &bytes);
            resp.events = shared.iter().map(|e| e.to_pb(prev_kv)).collect();
            assert_eq!(pb::WatchResponse::decode(got).unwrap(), resp);
            assert_eq!(resp.events[0].prev_kv.is_some(), prev_kv);
        }
        // Cached per shape: the same bytes again.
        assert_eq!(shared[0].encoded(true), shared[0].encoded(true));
        assert_ne!(shared[0].encoded(true), shared[0].encoded(false));
    }

    #[test]
    fn fragments_split_like_etcd() {
        let resp = pb::WatchResponse {
            watch_id: 3,
            events: (0..10).map(|i| ev(&format!("k{i}"), 100)).collect(),
            ..Default::default()
        };
        // Not asked, or small enough: one response.
        assert_eq!(fragments(resp.clone(), false, 300).len(), 1);
        assert_eq!(fragments(resp.clone(), true, 1 << 20).len(), 1);
        let parts = fragments(resp.clone(), true, 300);
        assert!(parts.len() > 1);
        let n: usize = parts.iter().map(|p| p.events.len()).sum();
        assert_eq!(n, 10);
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.fragment, i + 1 < parts.len());
            assert!(!p.events.is_empty());
            assert!(p.events.len() == 1 || p.encoded_len() < 300);
            assert_eq!(p.watch_id, 3);
        }
        let keys: Vec<_> = parts
            .iter()
            .flat_map(|p| p.events.iter().map(|e| e.kv.as_ref().unwrap().key.clone()))
            .collect();
        let want: Vec<_> = resp
            .events
            .iter()
            .map(|e| e.kv.as_ref().unwrap().key.clone())
            .collect();
        assert_eq!(keys, want);
        // A single large event is never split.
        let one = pb::WatchResponse {
            events: vec![ev("big", 1000)],
            ..Default::default()
        };
        assert_eq!(fragments(one, true, 300).len(), 1);
    }
}
