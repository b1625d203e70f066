//! The protos as the gateway needs them: per message its fields in
//! declaration order (the order Go's structs, and so etcd's JSON, have),
//! per enum its names, per gRPC method its messages and whether it
//! streams. Read once from the descriptors `build.rs` writes.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Int64,
    Uint64,
    Int32,
    Uint32,
    Bool,
    String,
    Bytes,
    /// Full proto name, `etcdserverpb.RangeRequest.SortOrder`.
    Enum(String),
    /// Full proto name, `etcdserverpb.ResponseHeader`.
    Message(String),
}

#[derive(Debug)]
pub struct Field {
    /// The proto name, which etcd's JSON uses (`OrigName`).
    pub name: String,
    /// protoc's lowerCamelCase name, also accepted in requests.
    pub json_name: String,
    pub number: u32,
    pub kind: Kind,
    pub repeated: bool,
    /// Which oneof of its message it belongs to, if any.
    pub oneof: Option<i32>,
}

impl Field {
    pub fn in_oneof(&self) -> bool {
        self.oneof.is_some()
    }
}

#[derive(Debug, Default)]
pub struct MessageType {
    pub fields: Vec<Field>,
}

#[derive(Debug)]
pub struct EnumType {
    /// The Go type's name, as Go's errors print it
    /// (`etcdserverpb.RangeRequest_SortOrder`).
    pub go_name: String,
    pub values: Vec<(String, i32)>,
}

#[derive(Debug)]
pub struct Method {
    pub input: String,
    pub output: String,
    pub client_streaming: bool,
    pub server_streaming: bool,
}

#[derive(Debug, Default)]
pub struct Schema {
    pub messages: HashMap<String, MessageType>,
    pub enums: HashMap<String, EnumType>,
    /// By gRPC path, `/etcdserverpb.KV/Range`.
    pub methods: HashMap<String, Method>,
}

/// The schema of every proto ferrokv serves; an error only if the
/// descriptors built into the binary are unusable (a build bug).
pub fn schema() -> Result<&'static Schema, &'static str> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    match SCHEMA.get_or_init(|| Schema::from_descriptors(DESCRIPTORS)) {
        Ok(s) => Ok(s),
        Err(e) => Err(e.as_str()),
    }
}

fn strip_dot(name: &str) -> String {
    name.strip_prefix('.').unwrap_or(name).to_string()
}

/// protoc's `ToJsonName`: underscores dropped, the letter after one
/// upper-cased.
fn json_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

impl Schema {
    fn from_descriptors(bytes: &[u8]) -> Result<Schema, String> {
        let set = FileDescriptorSet::decode(bytes).map_err(|e| e.to_string())?;
        let mut schema = Schema::default();
        for file in &set.file {
            let package = file.package();
            for m in &file.message_type {
                schema.add_message(package, package, "", m)?;
            }
            for e in &file.enum_type {
                schema.add_enum(package, package, "", e);
            }
            for svc in &file.service {
                for m in &svc.method {
                    schema.methods.insert(
                        format!("/{package}.{}/{}", svc.name(), m.name()),
                        Method {
                            input: strip_dot(m.input_type()),
                            output: strip_dot(m.output_type()),
                            client_streaming: m.client_streaming(),
                            server_streaming: m.server_streaming(),
                        },
                    );
                }
            }
        }
        Ok(schema)
    }

    fn add_enum(
        &mut self,
        package: &str,
        scope: &str,
        go_scope: &str,
        e: &prost_types::EnumDescriptorProto,
    ) {
        self.enums.insert(
            format!("{scope}.{}", e.name()),
            EnumType {
                go_name: format!("{package}.{go_scope}{}", e.name()),
                values: e
                    .value
                    .iter()
                    .map(|v| (v.name().to_string(), v.number()))
                    .collect(),
            },
        );
    }

    fn add_message(
        &mut self,
        package: &str,
        scope: &str,
        go_scope: &str,
        m: &DescriptorProto,
    ) -> Result<(), String> {
        let full = format!("{scope}.{}", m.name());
        let go_inner = format!("{go_scope}{}_", m.name());
        for nested in &m.nested_type {
            self.add_message(package, &full, &go_inner, nested)?;
        }
        for e in &m.enum_type {
            self.add_enum(package, &full, &go_inner, e);
        }
        let mut fields = Vec::with_capacity(m.field.len());
        for f in &m.field {
            let kind = match f.r#type() {
                Type::Int64 => Kind::Int64,
                Type::Uint64 => Kind::Uint64,
                Type::Int32 => Kind::Int32,
                Type::Uint32 => Kind::Uint32,
                Type::Bool => Kind::Bool,
                Type::String => Kind::String,
                Type::Bytes => Kind::Bytes,
                Type::Enum => Kind::Enum(strip_dot(f.type_name())),
                Type::Message => Kind::Message(strip_dot(f.type_name())),
                other => {
                    // etcd's protos use none of the others; a proto that
                    // does needs its JSON mapping written here first.
                    return Err(format!(
                        "{full}.{}: {other:?} fields are not mapped to JSON",
                        f.name()
                    ));
                }
            };
            fields.push(Field {
                name: f.name().to_string(),
                json_name: json_name(f.name()),
                number: u32::try_from(f.number()).map_err(|e| e.to_string())?,
                kind,
                repeated: f.label() == Label::Repeated,
                oneof: f.oneof_index,
            });
        }
        self.messages.insert(full, MessageType { fields });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_protos_load() {
        let s = schema().unwrap();
        let put = &s.messages["etcdserverpb.PutRequest"];
        let names: Vec<_> = put.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "key",
                "value",
                "lease",
                "prev_kv",
                "ignore_value",
                "ignore_lease"
            ]
        );
        assert_eq!(put.fields[3].json_name, "prevKv");
        assert_eq!(
            s.enums["etcdserverpb.RangeRequest.SortOrder"].go_name,
            "etcdserverpb.RangeRequest_SortOrder"
        );
        assert_eq!(
            s.enums["mvccpb.Event.EventType"].go_name,
            "mvccpb.Event_EventType"
        );
        let watch = &s.methods["/etcdserverpb.Watch/Watch"];
        assert!(watch.client_streaming && watch.server_streaming);
        assert_eq!(
            s.methods["/v3lockpb.Lock/Lock"].input,
            "v3lockpb.LockRequest"
        );
        let compare = &s.messages["etcdserverpb.Compare"];
        assert!(compare
            .fields
            .iter()
            .any(|f| f.name == "mod_revision" && f.in_oneof()));
    }
}
