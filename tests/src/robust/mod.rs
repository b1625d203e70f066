//! The robustness suite's apparatus (issue 11): histories of concurrent
//! clients, the etcd KV model they are checked against, the checkers
//! (linearizability, watch guarantees), and the workloads that record
//! histories from real servers. See `docs/robustness.md`.

pub mod append;
pub mod elle;
pub mod history;
pub mod kubernetes;
pub mod linearize;
pub mod model;
pub mod suite;
pub mod watch;
pub mod workload;
