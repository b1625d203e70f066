//! Test harness for ferrokv's integration and compatibility tests.
//!
//! Everything here drives real processes: the real `etcd` and `etcdctl` from
//! Debian's `etcd-server`/`etcd-client` packages as the reference, and the
//! `ferrokv` binary built from this workspace as the system under test.
//!
//! - [`addr`]: unused loopback addresses, spread over 127.0.0.2..=250 so that
//!   parallel tests (nextest runs one process per test) do not collide.
//! - [`server`]: [`EtcdProcess`] and [`FerrokvProcess`], single-member servers
//!   that are always stopped (SIGKILL + wait) when dropped, also on panic;
//!   [`EtcdCluster`] and [`FerrokvCluster`], several members started
//!   together with the same cluster flags.
//! - [`etcdctl()`]: one bounded-in-time `etcdctl` invocation.
//! - [`http_get()`]: one bounded HTTP/1.1 GET (`/health`, `/metrics`, ...).
//! - [`cluster`]: what the three-member fault tests share: leader
//!   discovery, a gRPC write load, the acknowledged-write check.
//! - [`netns`]: a private network of namespaces per test ([`netns::Net`]):
//!   members isolated, partitioned, their links made lossy or slow.
//! - [`grpc`]: a bounded etcd v3 gRPC client (unary calls, bidi streams)
//!   for stream-level tests.
//! - [`normalize`]: removes what legitimately differs between two servers
//!   (ids, terms, addresses, timings) before outputs are compared.
//! - [`script`]: the data-driven golden runner for `testdata/compat/*.txt`.
//! - [`proxy`]: TCP proxies that delay client bytes or cut a connection
//!   when its first request arrives.
//! - [`tls`]: a test CA and certificate (openssl) for servers run with TLS.
//! - [`sim`]: the deterministic simulation of the replicated shard logs
//!   (the real raft log core over a simulated network and disk).
//! - [`tmpfs`]: a small tmpfs for a data dir, and its fill, for the
//!   full-disk tests and faults.
//! - [`ctl`]: the same scripts (and `testdata/ctl/*.txt`) run with etcdctl
//!   and with `ferroctl`, compared step by step.
//!
//! Limits: every wait in this crate has a named upper bound
//! ([`server::SERVER_READY_TIMEOUT`], [`etcdctl::ETCDCTL_TIMEOUT`]).

pub mod addr;
pub mod clock;
pub mod cluster;
pub mod ctl;
pub mod diff;
pub mod etcdctl;
pub mod grpc;
pub mod http;
pub mod netns;
pub mod normalize;
pub mod proxy;
pub mod robust;
pub mod script;
pub mod server;
pub mod sim;
pub mod tls;
pub mod tmpfs;

pub use addr::{free_addr, free_addr_pair};
pub use etcdctl::{etcdctl, etcdctl_bin, Output};
pub use http::http_get;
pub use normalize::Normalizer;
pub use server::{
    ClusterOptions, EtcdCluster, EtcdProcess, FerrokvCluster, FerrokvProcess, Placement,
    ServerCluster, ServerOptions, ServerProcess,
};
