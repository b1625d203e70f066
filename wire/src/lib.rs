//! The etcd v3 protocol as ferrokv speaks it: the protos (prost), gRPC
//! framing over HTTP/2, and the HTTP/1.1 endpoints on the same port.
//!
//! This crate knows nothing of shards or storage: a connection is served by
//! [`conn::serve`] and every request is handed to a [`conn::Handler`].

pub mod conn;
pub mod der;
#[doc(hidden)]
pub mod fuzzing;
mod gateway;
pub mod grpc;
mod io;
pub mod tls;

/// Generated message types, in etcd's proto packages.
pub mod pb {
    pub mod mvccpb {
        include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    }
    pub mod authpb {
        include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
    }
    pub mod etcdserverpb {
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    }
    pub mod v3lockpb {
        include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
    }
    pub mod v3electionpb {
        include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
    }
}

pub use prost::Message;
