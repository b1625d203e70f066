//! The parts of the `ferrokv` server that other crates of the workspace
//! use: member and cluster identity as etcd derives them
//! ([`cluster`]), which the integration tests compare with real etcd.

pub mod cluster;
