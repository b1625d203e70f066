//! JSON exactly as Go's `encoding/json` marshals etcd's gogoproto structs
//! (the structs etcdctl's `-w json` prints): fields in struct order, the
//! proto field's snake_case json tag, `omitempty` on every proto field,
//! int64/uint64 as bare numbers and bytes as base64.

use ferrokv_wire::pb::etcdserverpb::{
    response_op, DeleteRangeResponse, Member, PutResponse, RangeResponse, ResponseHeader,
    TxnResponse,
};
use ferrokv_wire::pb::mvccpb::{Event, KeyValue};

use crate::gofmt::{base64, json_string};

/// An object under construction; `omitempty` fields are skipped by the
/// `*_omit` helpers.
#[derive(Default)]
pub struct Obj {
    fields: Vec<String>,
}

impl Obj {
    pub fn new() -> Self {
        Obj::default()
    }

    /// A field whose value is already JSON.
    pub fn raw(mut self, name: &str, value: impl Into<String>) -> Self {
        self.fields
            .push(format!("{}:{}", json_string(name), value.into()));
        self
    }

    pub fn num(self, name: &str, value: impl std::fmt::Display) -> Self {
        self.raw(name, value.to_string())
    }

    pub fn num_omit(self, name: &str, value: i128) -> Self {
        if value == 0 {
            self
        } else {
            self.num(name, value)
        }
    }

    pub fn bool_omit(self, name: &str, value: bool) -> Self {
        if value {
            self.raw(name, "true")
        } else {
            self
        }
    }

    pub fn str(self, name: &str, value: &str) -> Self {
        self.raw(name, json_string(value))
    }

    pub fn str_omit(self, name: &str, value: &str) -> Self {
        if value.is_empty() {
            self
        } else {
            self.str(name, value)
        }
    }

    pub fn bytes_omit(self, name: &str, value: &[u8]) -> Self {
        if value.is_empty() {
            self
        } else {
            self.raw(name, json_string(&base64(value)))
        }
    }

    pub fn opt(self, name: &str, value: Option<String>) -> Self {
        match value {
            Some(v) => self.raw(name, v),
            None => self,
        }
    }

    /// A slice field with `omitempty`: absent when empty.
    pub fn list_omit(self, name: &str, items: Vec<String>) -> Self {
        if items.is_empty() {
            self
        } else {
            self.raw(name, array(items))
        }
    }

    pub fn build(self) -> String {
        format!("{{{}}}", self.fields.join(","))
    }

    /// The fields without braces, for Go's embedded structs.
    pub fn inner(self) -> String {
        self.fields.join(",")
    }
}

pub fn array(items: Vec<String>) -> String {
    format!("[{}]", items.join(","))
}

pub fn header_fields(h: &ResponseHeader) -> Obj {
    Obj::new()
        .num_omit("cluster_id", i128::from(h.cluster_id))
        .num_omit("member_id", i128::from(h.member_id))
        .num_omit("revision", i128::from(h.revision))
        .num_omit("raft_term", i128::from(h.raft_term))
}

pub fn header(h: &ResponseHeader) -> String {
    header_fields(h).build()
}

pub fn kv(kv: &KeyValue) -> String {
    Obj::new()
        .bytes_omit("key", &kv.key)
        .num_omit("create_revision", i128::from(kv.create_revision))
        .num_omit("mod_revision", i128::from(kv.mod_revision))
        .num_omit("version", i128::from(kv.version))
        .bytes_omit("value", &kv.value)
        .num_omit("lease", i128::from(kv.lease))
        .build()
}

pub fn range(r: &RangeResponse) -> String {
    Obj::new()
        .opt("header", r.header.as_ref().map(header))
        .list_omit("kvs", r.kvs.iter().map(kv).collect())
        .bool_omit("more", r.more)
        .num_omit("count", i128::from(r.count))
        .build()
}

pub fn put(r: &PutResponse) -> String {
    Obj::new()
        .opt("header", r.header.as_ref().map(header))
        .opt("prev_kv", r.prev_kv.as_ref().map(kv))
        .build()
}

pub fn delete(r: &DeleteRangeResponse) -> String {
    Obj::new()
        .opt("header", r.header.as_ref().map(header))
        .num_omit("deleted", i128::from(r.deleted))
        .list_omit("prev_kvs", r.prev_kvs.iter().map(kv).collect())
        .build()
}

pub fn txn(r: &TxnResponse) -> String {
    // A oneof is a Go interface field without a json tag: the wrapper's
    // Go field names (`Response`, `ResponsePut`) appear as keys.
    let responses = r
        .responses
        .iter()
        .map(|op| {
            let inner = match &op.response {
                Some(response_op::Response::ResponseRange(x)) => {
                    Obj::new().raw("ResponseRange", range(x)).build()
                }
                Some(response_op::Response::ResponsePut(x)) => {
                    Obj::new().raw("ResponsePut", put(x)).build()
                }
                Some(response_op::Response::ResponseDeleteRange(x)) => {
                    Obj::new().raw("ResponseDeleteRange", delete(x)).build()
                }
                Some(response_op::Response::ResponseTxn(x)) => {
                    Obj::new().raw("ResponseTxn", txn(x)).build()
                }
                None => "null".to_string(),
            };
            Obj::new().raw("Response", inner).build()
        })
        .collect();
    Obj::new()
        .opt("header", r.header.as_ref().map(header))
        .bool_omit("succeeded", r.succeeded)
        .list_omit("responses", responses)
        .build()
}

pub fn event(e: &Event) -> String {
    Obj::new()
        .num_omit("type", i128::from(e.r#type))
        .opt("kv", e.kv.as_ref().map(kv))
        .opt("prev_kv", e.prev_kv.as_ref().map(kv))
        .build()
}

pub fn member(m: &Member) -> String {
    let strings = |v: &[String]| v.iter().map(|s| json_string(s)).collect::<Vec<_>>();
    Obj::new()
        .num_omit("ID", i128::from(m.id))
        .str_omit("name", &m.name)
        .list_omit("peerURLs", strings(&m.peer_ur_ls))
        .list_omit("clientURLs", strings(&m.client_ur_ls))
        .bool_omit("isLearner", m.is_learner)
        .build()
}

impl Obj {
    /// Go's embedded struct: its (already rendered) fields spliced in.
    pub fn splice(mut self, fields: String) -> Self {
        if !fields.is_empty() {
            self.fields.push(fields);
        }
        self
    }
}
