//! etcdctl's five output formats (`-w simple|json|fields|table|protobuf`)
//! for every response ferroctl prints. Each function returns the exact
//! bytes etcdctl writes to stdout, or the error etcdctl gives when the
//! format does not support that response.

use ferrokv_wire::pb::etcdserverpb::{
    response_op, AlarmMember, AlarmResponse, DeleteRangeResponse, HashKvResponse,
    LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse,
    LeaseTimeToLiveResponse, MemberListResponse, PutResponse, RangeResponse, ResponseHeader,
    StatusResponse, TxnResponse, WatchResponse,
};
use ferrokv_wire::pb::mvccpb::{event::EventType, KeyValue};
use prost::Message;

use crate::error::CmdError;
use crate::gofmt::{hex_prefixed, human_bytes, quote, raw};
use crate::json::{self, Obj};
use crate::table::ascii_table;

/// `-w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Simple,
    Json,
    Fields,
    Table,
    Protobuf,
}

impl Format {
    pub fn parse(name: &str) -> Option<Format> {
        Some(match name {
            "simple" => Format::Simple,
            "json" => Format::Json,
            "fields" => Format::Fields,
            "table" => Format::Table,
            "protobuf" => Format::Protobuf,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Format::Simple => "simple",
            Format::Json => "json",
            Format::Fields => "fields",
            Format::Table => "table",
            Format::Protobuf => "protobuf",
        }
    }
}

/// A format with its modifiers.
#[derive(Clone, Copy, Debug)]
pub struct Printer {
    pub format: Format,
    pub hex: bool,
    /// `get --print-value-only`.
    pub value_only: bool,
}

/// One endpoint's `endpoint health` result.
#[derive(Clone, Debug)]
pub struct EpHealth {
    pub endpoint: String,
    pub health: bool,
    pub took: String,
    pub error: String,
}

pub type Out = Result<Vec<u8>, CmdError>;

fn text(s: String) -> Out {
    Ok(s.into_bytes())
}

impl Printer {
    fn unsupported(&self) -> Out {
        Err(CmdError::bad_feature(format!(
            "{} not supported as output format",
            self.format.name()
        )))
    }

    fn kv_simple(&self, out: &mut String, kv: &KeyValue) {
        let (k, v) = if self.hex {
            (hex_prefixed(&kv.key), hex_prefixed(&kv.value))
        } else {
            (raw(&kv.key), raw(&kv.value))
        };
        if !self.value_only {
            out.push_str(&k);
            out.push('\n');
        }
        out.push_str(&v);
        out.push('\n');
    }

    /// `string(kv.Key)` as bytes: the simple format writes keys and values
    /// raw, so non-UTF-8 bytes must pass through untouched.
    fn kv_simple_bytes(&self, out: &mut Vec<u8>, kv: &KeyValue) {
        if self.hex {
            let mut s = String::new();
            self.kv_simple(&mut s, kv);
            out.extend_from_slice(s.as_bytes());
            return;
        }
        if !self.value_only {
            out.extend_from_slice(&kv.key);
            out.push(b'\n');
        }
        out.extend_from_slice(&kv.value);
        out.push(b'\n');
    }

    pub fn get(&self, r: &RangeResponse) -> Out {
        match self.format {
            Format::Simple => {
                let mut out = Vec::new();
                for kv in &r.kvs {
                    self.kv_simple_bytes(&mut out, kv);
                }
                Ok(out)
            }
            Format::Json => text(json::range(r) + "\n"),
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                for kv in &r.kvs {
                    fields_kv(&mut out, "", kv);
                }
                out.push_str(&format!("\"More\" : {}\n\"Count\" : {}\n", r.more, r.count));
                text(out)
            }
            Format::Protobuf => Ok(r.encode_to_vec()),
            Format::Table => self.unsupported(),
        }
    }

    /// `get --count-only` (etcdctl 3.5): the count alone.
    pub fn count(&self, r: &RangeResponse) -> Out {
        match self.format {
            Format::Simple => text(format!("{}\n", r.count)),
            _ => self.get(r),
        }
    }

    pub fn put(&self, r: &PutResponse) -> Out {
        match self.format {
            Format::Simple => {
                let mut out = b"OK\n".to_vec();
                if let Some(kv) = &r.prev_kv {
                    self.kv_simple_bytes(&mut out, kv);
                }
                Ok(out)
            }
            Format::Json => text(json::put(r) + "\n"),
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                if let Some(kv) = &r.prev_kv {
                    fields_kv(&mut out, "Prev", kv);
                }
                text(out)
            }
            Format::Protobuf => Ok(r.encode_to_vec()),
            Format::Table => self.unsupported(),
        }
    }

    pub fn del(&self, r: &DeleteRangeResponse) -> Out {
        match self.format {
            Format::Simple => {
                let mut out = format!("{}\n", r.deleted).into_bytes();
                for kv in &r.prev_kvs {
                    self.kv_simple_bytes(&mut out, kv);
                }
                Ok(out)
            }
            Format::Json => text(json::delete(r) + "\n"),
            Format::Fields => {
                let mut out = String::new();
                fields_del(&mut out, r);
                text(out)
            }
            Format::Protobuf => Ok(r.encode_to_vec()),
            Format::Table => self.unsupported(),
        }
    }

    pub fn txn(&self, r: &TxnResponse) -> Out {
        match self.format {
            Format::Simple => {
                let mut out: Vec<u8> = if r.succeeded {
                    b"SUCCESS\n".to_vec()
                } else {
                    b"FAILURE\n".to_vec()
                };
                for op in &r.responses {
                    out.push(b'\n');
                    let part = match &op.response {
                        Some(response_op::Response::ResponseRange(x)) => self.get(x)?,
                        Some(response_op::Response::ResponsePut(x)) => self.put(x)?,
                        Some(response_op::Response::ResponseDeleteRange(x)) => self.del(x)?,
                        Some(response_op::Response::ResponseTxn(x)) => self.txn(x)?,
                        None => b"unexpected response <nil>\n".to_vec(),
                    };
                    out.extend_from_slice(&part);
                }
                Ok(out)
            }
            Format::Json => text(json::txn(r) + "\n"),
            Format::Fields => {
                let mut out = String::new();
                fields_txn(&mut out, r);
                text(out)
            }
            Format::Protobuf => Ok(r.encode_to_vec()),
            Format::Table => self.unsupported(),
        }
    }

    pub fn watch(&self, r: &WatchResponse) -> Out {
        match self.format {
            Format::Simple => {
                let mut out = Vec::new();
                for e in &r.events {
                    out.extend_from_slice(event_type_name(e.r#type).as_bytes());
                    out.push(b'\n');
                    if let Some(prev) = &e.prev_kv {
                        self.kv_simple_bytes(&mut out, prev);
                    }
                    let kv = e.kv.clone().unwrap_or_default();
                    self.kv_simple_bytes(&mut out, &kv);
                }
                Ok(out)
            }
            Format::Json => {
                // clientv3.WatchResponse: Go field names, no omitempty; its
                // Events slice is always made, so never null.
                let events = json::array(r.events.iter().map(json::event).collect());
                let h = r.header.unwrap_or_default();
                text(
                    Obj::new()
                        .raw("Header", json::header(&h))
                        .raw("Events", events)
                        .num("CompactRevision", r.compact_revision)
                        .raw("Canceled", r.canceled.to_string())
                        .raw("Created", r.created.to_string())
                        .build()
                        + "\n",
                )
            }
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                for e in &r.events {
                    out.push_str(&format!("\"Type\" : {}\n", event_type_name(e.r#type)));
                    if let Some(prev) = &e.prev_kv {
                        fields_kv(&mut out, "Prev", prev);
                    }
                    fields_kv(&mut out, "", &e.kv.clone().unwrap_or_default());
                }
                text(out)
            }
            Format::Protobuf => Ok(r.encode_to_vec()),
            Format::Table => self.unsupported(),
        }
    }

    pub fn grant(&self, r: &LeaseGrantResponse) -> Out {
        match self.format {
            Format::Simple => text(format!(
                "lease {:016x} granted with TTL({}s)\n",
                r.id, r.ttl
            )),
            Format::Json => {
                let h = r.header.unwrap_or_default();
                text(
                    Obj::new()
                        .splice(json::header_fields(&h).inner())
                        .num("ID", r.id)
                        .num("TTL", r.ttl)
                        .str("Error", &r.error)
                        .build()
                        + "\n",
                )
            }
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                out.push_str(&format!("\"ID\" : {}\n\"TTL\" : {}\n", r.id, r.ttl));
                text(out)
            }
            // etcdctl marshals clientv3's response, whose only
            // proto part is the embedded header.
            Format::Protobuf => Ok(r.header.unwrap_or_default().encode_to_vec()),
            Format::Table => self.unsupported(),
        }
    }

    pub fn revoke(&self, id: i64, r: &LeaseRevokeResponse) -> Out {
        self.header_only(r, r.header.as_ref(), format!("lease {id:016x} revoked\n"))
    }

    /// A response that carries only its header (auth changes, a revoke):
    /// `simple`, or the header in each format; no table.
    pub fn header_only<M: Message>(
        &self,
        resp: &M,
        header: Option<&ResponseHeader>,
        simple: String,
    ) -> Out {
        match self.format {
            Format::Simple => text(simple),
            Format::Json => text(Obj::new().opt("header", header.map(json::header)).build() + "\n"),
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, header);
                text(out)
            }
            Format::Protobuf => Ok(resp.encode_to_vec()),
            Format::Table => self.unsupported(),
        }
    }

    pub fn keep_alive(&self, r: &LeaseKeepAliveResponse) -> Out {
        match self.format {
            Format::Simple => text(format!(
                "lease {:016x} keepalived with TTL({})\n",
                r.id, r.ttl
            )),
            Format::Json => {
                let h = r.header.unwrap_or_default();
                text(
                    Obj::new()
                        .splice(json::header_fields(&h).inner())
                        .num("ID", r.id)
                        .num("TTL", r.ttl)
                        .build()
                        + "\n",
                )
            }
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                out.push_str(&format!("\"ID\" : {}\n\"TTL\" : {}\n", r.id, r.ttl));
                text(out)
            }
            // etcdctl marshals clientv3's response, whose only
            // proto part is the embedded header.
            Format::Protobuf => Ok(r.header.unwrap_or_default().encode_to_vec()),
            Format::Table => self.unsupported(),
        }
    }

    pub fn time_to_live(&self, r: &LeaseTimeToLiveResponse, keys: bool) -> Out {
        match self.format {
            Format::Simple => {
                if r.granted_ttl == 0 && r.ttl == -1 {
                    return text(format!("lease {:016x} already expired\n", r.id));
                }
                let mut line = format!(
                    "lease {:016x} granted with TTL({}s), remaining({}s)",
                    r.id, r.granted_ttl, r.ttl
                );
                if keys {
                    let ks: Vec<String> = r.keys.iter().map(|k| raw(k)).collect();
                    line.push_str(&format!(", attached keys([{}])", ks.join(" ")));
                }
                line.push('\n');
                text(line)
            }
            Format::Json => {
                let h = r.header.unwrap_or_default();
                let keys = if r.keys.is_empty() {
                    "null".to_string()
                } else {
                    json::array(
                        r.keys
                            .iter()
                            .map(|k| crate::gofmt::json_string(&crate::gofmt::base64(k)))
                            .collect(),
                    )
                };
                text(
                    Obj::new()
                        .splice(json::header_fields(&h).inner())
                        .num("id", r.id)
                        .num("ttl", r.ttl)
                        .num("granted-ttl", r.granted_ttl)
                        .raw("keys", keys)
                        .build()
                        + "\n",
                )
            }
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                out.push_str(&format!(
                    "\"ID\" : {}\n\"TTL\" : {}\n\"GrantedTTL\" : {}\n",
                    r.id, r.ttl, r.granted_ttl
                ));
                for k in &r.keys {
                    out.push_str(&format!("\"Key\" : {}\n", quote(k)));
                }
                text(out)
            }
            // etcdctl marshals clientv3's response, whose only
            // proto part is the embedded header.
            Format::Protobuf => Ok(r.header.unwrap_or_default().encode_to_vec()),
            Format::Table => self.unsupported(),
        }
    }

    pub fn leases(&self, r: &LeaseLeasesResponse) -> Out {
        match self.format {
            Format::Simple => {
                let mut out = format!("found {} leases\n", r.leases.len());
                for l in &r.leases {
                    out.push_str(&format!("{:016x}\n", l.id));
                }
                text(out)
            }
            Format::Json => {
                let h = r.header.unwrap_or_default();
                let leases = if r.leases.is_empty() {
                    "null".to_string()
                } else {
                    json::array(
                        r.leases
                            .iter()
                            .map(|l| Obj::new().num("id", l.id).build())
                            .collect(),
                    )
                };
                text(
                    Obj::new()
                        .splice(json::header_fields(&h).inner())
                        .raw("leases", leases)
                        .build()
                        + "\n",
                )
            }
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                for l in &r.leases {
                    out.push_str(&format!("\"ID\" : {}\n", l.id));
                }
                text(out)
            }
            // etcdctl marshals clientv3's response, whose only
            // proto part is the embedded header.
            Format::Protobuf => Ok(r.header.unwrap_or_default().encode_to_vec()),
            Format::Table => self.unsupported(),
        }
    }

    pub fn member_list(&self, r: &MemberListResponse) -> Out {
        match self.format {
            Format::Simple => {
                let mut out = String::new();
                for m in &r.members {
                    let status = if m.name.is_empty() {
                        "unstarted"
                    } else {
                        "started"
                    };
                    out.push_str(&format!(
                        "{:x}, {status}, {}, {}, {}, {}\n",
                        m.id,
                        m.name,
                        m.peer_ur_ls.join(","),
                        m.client_ur_ls.join(","),
                        m.is_learner
                    ));
                }
                text(out)
            }
            Format::Json => {
                let members = r.members.iter().map(json::member).collect();
                let mut obj = Obj::new().opt("header", r.header.as_ref().map(json::header));
                obj = obj.list_omit("members", members);
                // etcdctl 3.4 ignores --hex here (3.5 prints hex id strings).
                text(obj.build() + "\n")
            }
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                for m in &r.members {
                    out.push_str(&format!(
                        "\"ID\" : {}\n\"Name\" : {}\n",
                        m.id,
                        quote(m.name.as_bytes())
                    ));
                    for u in &m.peer_ur_ls {
                        out.push_str(&format!("\"PeerURL\" : {}\n", quote(u.as_bytes())));
                    }
                    for u in &m.client_ur_ls {
                        out.push_str(&format!("\"ClientURL\" : {}\n", quote(u.as_bytes())));
                    }
                    out.push_str(&format!("\"IsLearner\" : {}\n\n", m.is_learner));
                }
                text(out)
            }
            Format::Table => {
                let rows: Vec<Vec<String>> = r
                    .members
                    .iter()
                    .map(|m| {
                        let status = if m.name.is_empty() {
                            "unstarted"
                        } else {
                            "started"
                        };
                        vec![
                            format!("{:x}", m.id),
                            status.to_string(),
                            m.name.clone(),
                            m.peer_ur_ls.join(","),
                            m.client_ur_ls.join(","),
                            m.is_learner.to_string(),
                        ]
                    })
                    .collect();
                text(ascii_table(
                    &[
                        "ID",
                        "STATUS",
                        "NAME",
                        "PEER ADDRS",
                        "CLIENT ADDRS",
                        "IS LEARNER",
                    ],
                    &rows,
                ))
            }
            Format::Protobuf => Ok(r.encode_to_vec()),
        }
    }

    pub fn endpoint_health(&self, hs: &[EpHealth]) -> Out {
        match self.format {
            // The simple format goes to stderr (see `health_lines`).
            Format::Simple => Ok(Vec::new()),
            Format::Json => text(
                json::array(
                    hs.iter()
                        .map(|h| {
                            Obj::new()
                                .str("endpoint", &h.endpoint)
                                .raw("health", h.health.to_string())
                                .str("took", &h.took)
                                .str_omit("error", &h.error)
                                .build()
                        })
                        .collect(),
                ) + "\n",
            ),
            Format::Fields => {
                let mut out = String::new();
                for h in hs {
                    out.push_str(&format!(
                        "\"Endpoint\" : {}\n\"Health\" : {}\n\"Took\" : {}\n\"Error\" : {}\n\n",
                        quote(h.endpoint.as_bytes()),
                        h.health,
                        h.took,
                        h.error
                    ));
                }
                text(out)
            }
            Format::Table => {
                let rows: Vec<Vec<String>> = hs
                    .iter()
                    .map(|h| {
                        vec![
                            h.endpoint.clone(),
                            h.health.to_string(),
                            h.took.clone(),
                            h.error.clone(),
                        ]
                    })
                    .collect();
                text(ascii_table(&["ENDPOINT", "HEALTH", "TOOK", "ERROR"], &rows))
            }
            Format::Protobuf => self.unsupported(),
        }
    }

    pub fn endpoint_status(&self, eps: &[(String, StatusResponse)]) -> Out {
        let row = |ep: &str, s: &StatusResponse| {
            let h = s.header.unwrap_or_default();
            vec![
                ep.to_string(),
                format!("{:x}", h.member_id),
                s.version.clone(),
                human_bytes(u64::try_from(s.db_size).unwrap_or(0)),
                (s.leader == h.member_id).to_string(),
                s.is_learner.to_string(),
                s.raft_term.to_string(),
                s.raft_index.to_string(),
                s.raft_applied_index.to_string(),
                s.errors.join(", "),
            ]
        };
        match self.format {
            Format::Simple => {
                let mut out = String::new();
                for (ep, s) in eps {
                    out.push_str(&row(ep, s).join(", "));
                    out.push('\n');
                }
                text(out)
            }
            Format::Json => text(
                json::array(
                    eps.iter()
                        .map(|(ep, s)| {
                            let status = Obj::new()
                                .opt("header", s.header.as_ref().map(json::header))
                                .str_omit("version", &s.version)
                                .num_omit("dbSize", i128::from(s.db_size))
                                .num_omit("leader", i128::from(s.leader))
                                .num_omit("raftIndex", i128::from(s.raft_index))
                                .num_omit("raftTerm", i128::from(s.raft_term))
                                .num_omit("raftAppliedIndex", i128::from(s.raft_applied_index))
                                .list_omit(
                                    "errors",
                                    s.errors
                                        .iter()
                                        .map(|e| crate::gofmt::json_string(e))
                                        .collect(),
                                )
                                .num_omit("dbSizeInUse", i128::from(s.db_size_in_use))
                                .bool_omit("isLearner", s.is_learner)
                                .build();
                            Obj::new().str("Endpoint", ep).raw("Status", status).build()
                        })
                        .collect(),
                ) + "\n",
            ),
            Format::Fields => {
                let mut out = String::new();
                for (ep, s) in eps {
                    fields_header(&mut out, s.header.as_ref());
                    out.push_str(&format!(
                        "\"Version\" : {}\n\"DBSize\" : {}\n\"Leader\" : {}\n\"IsLearner\" : {}\n\"RaftIndex\" : {}\n\"RaftTerm\" : {}\n\"RaftAppliedIndex\" : {}\n\"Errors\" : [{}]\n\"Endpoint\" : {}\n\n",
                        quote(s.version.as_bytes()),
                        s.db_size,
                        s.leader,
                        s.is_learner,
                        s.raft_index,
                        s.raft_term,
                        s.raft_applied_index,
                        s.errors.join(" "),
                        quote(ep.as_bytes())
                    ));
                }
                text(out)
            }
            Format::Table => {
                let rows: Vec<Vec<String>> = eps.iter().map(|(ep, s)| row(ep, s)).collect();
                text(ascii_table(
                    &[
                        "ENDPOINT",
                        "ID",
                        "VERSION",
                        "DB SIZE",
                        "IS LEADER",
                        "IS LEARNER",
                        "RAFT TERM",
                        "RAFT INDEX",
                        "RAFT APPLIED INDEX",
                        "ERRORS",
                    ],
                    &rows,
                ))
            }
            Format::Protobuf => self.unsupported(),
        }
    }

    pub fn endpoint_hashkv(&self, eps: &[(String, HashKvResponse)]) -> Out {
        match self.format {
            Format::Simple => {
                let mut out = String::new();
                for (ep, h) in eps {
                    out.push_str(&format!("{ep}, {}\n", h.hash));
                }
                text(out)
            }
            Format::Json => text(
                json::array(
                    eps.iter()
                        .map(|(ep, h)| {
                            let inner = Obj::new()
                                .opt("header", h.header.as_ref().map(json::header))
                                .num_omit("hash", i128::from(h.hash))
                                .num_omit("compact_revision", i128::from(h.compact_revision))
                                .build();
                            Obj::new().str("Endpoint", ep).raw("HashKV", inner).build()
                        })
                        .collect(),
                ) + "\n",
            ),
            Format::Fields => {
                let mut out = String::new();
                for (ep, h) in eps {
                    fields_header(&mut out, h.header.as_ref());
                    out.push_str(&format!(
                        "\"Endpoint\" : {}\n\"Hash\" : {}\n\n",
                        quote(ep.as_bytes()),
                        h.hash
                    ));
                }
                text(out)
            }
            Format::Table => {
                let rows: Vec<Vec<String>> = eps
                    .iter()
                    .map(|(ep, h)| vec![ep.clone(), h.hash.to_string()])
                    .collect();
                text(ascii_table(&["ENDPOINT", "HASH"], &rows))
            }
            Format::Protobuf => self.unsupported(),
        }
    }

    pub fn alarm(&self, r: &AlarmResponse) -> Out {
        match self.format {
            Format::Simple => {
                let mut out = String::new();
                for a in &r.alarms {
                    out.push_str(&format!("{}\n", alarm_text(a)));
                }
                text(out)
            }
            Format::Json => {
                let alarms = r
                    .alarms
                    .iter()
                    .map(|a| {
                        Obj::new()
                            .num_omit("memberID", i128::from(a.member_id))
                            .num_omit("alarm", i128::from(a.alarm))
                            .build()
                    })
                    .collect();
                text(
                    Obj::new()
                        .opt("header", r.header.as_ref().map(json::header))
                        .list_omit("alarms", alarms)
                        .build()
                        + "\n",
                )
            }
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                for a in &r.alarms {
                    out.push_str(&format!(
                        "\"MemberID\" : {}\n\"AlarmType\" : {}\n",
                        a.member_id,
                        alarm_name(a.alarm)
                    ));
                }
                text(out)
            }
            Format::Protobuf => Ok(r.encode_to_vec()),
            Format::Table => self.unsupported(),
        }
    }
}

/// `fmt.Printf("%+v\n", alarm)` of gogoproto's AlarmMember: its compact
/// text form, zero fields left out, with a trailing space.
fn alarm_text(a: &AlarmMember) -> String {
    let mut s = String::new();
    if a.member_id != 0 {
        s.push_str(&format!("memberID:{} ", a.member_id));
    }
    if a.alarm != 0 {
        s.push_str(&format!("alarm:{} ", alarm_name(a.alarm)));
    }
    s
}

fn alarm_name(alarm: i32) -> String {
    match alarm {
        0 => "NONE".into(),
        1 => "NOSPACE".into(),
        2 => "CORRUPT".into(),
        other => other.to_string(),
    }
}

fn event_type_name(t: i32) -> String {
    match EventType::try_from(t) {
        Ok(EventType::Put) => "PUT".into(),
        Ok(EventType::Delete) => "DELETE".into(),
        Err(_) => t.to_string(),
    }
}

/// The header as etcdctl's `fields` format prints it.
pub(crate) fn fields_header(out: &mut String, h: Option<&ResponseHeader>) {
    let h = h.copied().unwrap_or_default();
    out.push_str(&format!(
        "\"ClusterID\" : {}\n\"MemberID\" : {}\n\"Revision\" : {}\n\"RaftTerm\" : {}\n",
        h.cluster_id, h.member_id, h.revision, h.raft_term
    ));
}

fn fields_kv(out: &mut String, pfx: &str, kv: &KeyValue) {
    out.push_str(&format!(
        "\"{pfx}Key\" : {}\n\"{pfx}CreateRevision\" : {}\n\"{pfx}ModRevision\" : {}\n\"{pfx}Version\" : {}\n\"{pfx}Value\" : {}\n\"{pfx}Lease\" : {}\n",
        quote(&kv.key),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        quote(&kv.value),
        kv.lease
    ));
}

fn fields_del(out: &mut String, r: &DeleteRangeResponse) {
    fields_header(out, r.header.as_ref());
    out.push_str(&format!("\"Deleted\" : {}\n", r.deleted));
    for kv in &r.prev_kvs {
        fields_kv(out, "Prev", kv);
    }
}

fn fields_txn(out: &mut String, r: &TxnResponse) {
    fields_header(out, r.header.as_ref());
    out.push_str(&format!("\"Succeeded\" : {}\n", r.succeeded));
    for op in &r.responses {
        match &op.response {
            Some(response_op::Response::ResponseRange(x)) => {
                fields_header(out, x.header.as_ref());
                for kv in &x.kvs {
                    fields_kv(out, "", kv);
                }
                out.push_str(&format!("\"More\" : {}\n\"Count\" : {}\n", x.more, x.count));
            }
            Some(response_op::Response::ResponsePut(x)) => {
                fields_header(out, x.header.as_ref());
                if let Some(kv) = &x.prev_kv {
                    fields_kv(out, "Prev", kv);
                }
            }
            Some(response_op::Response::ResponseDeleteRange(x)) => fields_del(out, x),
            Some(response_op::Response::ResponseTxn(x)) => {
                out.push_str(&format!(
                    "\"Unknown\" : {}\n",
                    quote(format!("{x:?}").as_bytes())
                ));
            }
            None => out.push_str("\"Unknown\" : \"<nil>\"\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrokv_wire::pb::etcdserverpb::{Member, ResponseOp};
    use ferrokv_wire::pb::mvccpb::Event;

    fn header(rev: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: rev,
            raft_term: 3,
        })
    }

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            lease: 0,
        }
    }

    fn printer(format: Format) -> Printer {
        Printer {
            format,
            hex: false,
            value_only: false,
        }
    }

    fn text(out: Out) -> String {
        String::from_utf8(out.unwrap_or_else(|e| panic!("{e:?}"))).unwrap_or_default()
    }

    #[test]
    fn get_in_every_format() {
        let r = RangeResponse {
            header: header(3),
            kvs: vec![kv("foo", "bar")],
            count: 1,
            more: false,
        };
        assert_eq!(text(printer(Format::Simple).get(&r)), "foo\nbar\n");
        assert_eq!(
            text(printer(Format::Json).get(&r)),
            "{\"header\":{\"cluster_id\":1,\"member_id\":2,\"revision\":3,\"raft_term\":3},\
             \"kvs\":[{\"key\":\"Zm9v\",\"create_revision\":2,\"mod_revision\":2,\"version\":1,\
             \"value\":\"YmFy\"}],\"count\":1}\n"
        );
        assert_eq!(
            text(printer(Format::Fields).get(&r)),
            "\"ClusterID\" : 1\n\"MemberID\" : 2\n\"Revision\" : 3\n\"RaftTerm\" : 3\n\
             \"Key\" : \"foo\"\n\"CreateRevision\" : 2\n\"ModRevision\" : 2\n\"Version\" : 1\n\
             \"Value\" : \"bar\"\n\"Lease\" : 0\n\"More\" : false\n\"Count\" : 1\n"
        );
        let hex = Printer {
            hex: true,
            ..printer(Format::Simple)
        };
        assert_eq!(text(hex.get(&r)), "\\x66\\x6f\\x6f\n\\x62\\x61\\x72\n");
        let e = printer(Format::Table).get(&r).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (4, "table not supported as output format")
        );
    }

    #[test]
    fn txn_json_uses_go_field_names_of_the_oneof() {
        let r = TxnResponse {
            header: header(5),
            succeeded: true,
            responses: vec![ResponseOp {
                response: Some(response_op::Response::ResponsePut(PutResponse {
                    header: Some(ResponseHeader {
                        revision: 5,
                        ..Default::default()
                    }),
                    prev_kv: None,
                })),
            }],
        };
        assert!(text(printer(Format::Json).txn(&r)).ends_with(
            "\"succeeded\":true,\"responses\":[{\"Response\":{\"ResponsePut\":{\"header\":{\"revision\":5}}}}]}\n"
        ));
        assert_eq!(text(printer(Format::Simple).txn(&r)), "SUCCESS\n\nOK\n");
    }

    #[test]
    fn watch_json_always_has_an_events_array() {
        let r = WatchResponse {
            header: header(7),
            events: vec![Event {
                r#type: 1,
                kv: Some(KeyValue {
                    key: b"k".to_vec().into(),
                    mod_revision: 7,
                    ..Default::default()
                }),
                prev_kv: None,
            }],
            ..Default::default()
        };
        assert_eq!(text(printer(Format::Simple).watch(&r)), "DELETE\nk\n\n");
        assert!(text(printer(Format::Json).watch(&r))
            .contains("\"Events\":[{\"type\":1,\"kv\":{\"key\":\"aw==\",\"mod_revision\":7}}],\"CompactRevision\":0"));
        let empty = WatchResponse {
            header: header(7),
            canceled: true,
            compact_revision: 5,
            ..Default::default()
        };
        assert!(text(printer(Format::Json).watch(&empty))
            .contains("\"Events\":[],\"CompactRevision\":5,\"Canceled\":true"));
    }

    #[test]
    fn member_list_simple_and_table() {
        let r = MemberListResponse {
            header: header(0),
            members: vec![Member {
                id: 0xfe45,
                name: "m1".into(),
                peer_ur_ls: vec!["http://a:2380".into()],
                client_ur_ls: vec!["http://a:2379".into()],
                is_learner: false,
            }],
        };
        assert_eq!(
            text(printer(Format::Simple).member_list(&r)),
            "fe45, started, m1, http://a:2380, http://a:2379, false\n"
        );
        let table = text(printer(Format::Table).member_list(&r));
        assert!(
            table.contains(
                "|  ID  | STATUS  | NAME |  PEER ADDRS   | CLIENT ADDRS  | IS LEARNER |\n"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "| fe45 | started |   m1 | http://a:2380 | http://a:2379 |      false |\n"
            ),
            "{table}"
        );
    }

    #[test]
    fn lease_lines() {
        let ttl = LeaseTimeToLiveResponse {
            header: header(1),
            id: 0x1234,
            ttl: -1,
            granted_ttl: 0,
            keys: vec![],
        };
        assert_eq!(
            text(printer(Format::Simple).time_to_live(&ttl, false)),
            "lease 0000000000001234 already expired\n"
        );
        let grant = LeaseGrantResponse {
            header: header(1),
            id: 0x1234,
            ttl: 60,
            error: String::new(),
        };
        assert_eq!(
            text(printer(Format::Json).grant(&grant)),
            "{\"cluster_id\":1,\"member_id\":2,\"revision\":1,\"raft_term\":3,\"ID\":4660,\"TTL\":60,\"Error\":\"\"}\n"
        );
    }
}
