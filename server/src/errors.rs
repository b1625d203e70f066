//! The one place where ferrokv errors become etcd's gRPC statuses. Clients
//! match on these strings, so each is pinned by a test to etcd's text.

use ferrokv_shards::Error as EngineError;
use ferrokv_wire::grpc::{Code, Status};

pub fn empty_key() -> Status {
    Status::new(Code::InvalidArgument, "etcdserver: key is not provided")
}
/// ErrGRPCKeyNotFound: an ignore_value/ignore_lease put of a key that is
/// not there, and (etcd's checkRequestOp) a txn operation with no request.
pub fn key_not_found() -> Status {
    Status::new(Code::InvalidArgument, "etcdserver: key not found")
}
pub fn too_many_ops() -> Status {
    Status::new(
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    )
}
pub fn duplicate_key() -> Status {
    Status::new(
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    )
}
pub fn value_provided() -> Status {
    Status::new(Code::InvalidArgument, "etcdserver: value is provided")
}
pub fn lease_provided() -> Status {
    Status::new(Code::InvalidArgument, "etcdserver: lease is provided")
}
pub fn invalid_sort_option() -> Status {
    Status::new(Code::InvalidArgument, "etcdserver: invalid sort option")
}
pub fn request_too_large() -> Status {
    Status::new(Code::InvalidArgument, "etcdserver: request is too large")
}
pub fn no_space() -> Status {
    Status::new(
        Code::ResourceExhausted,
        "etcdserver: mvcc: database space exceeded",
    )
}
/// etcd's `ErrGRPCNoLeader`, for a call that asked for a leader
/// (metadata `hasleader`) when there is none.
pub fn no_leader() -> Status {
    Status::new(Code::Unavailable, "etcdserver: no leader")
}

pub fn not_for_learner() -> Status {
    Status::new(
        Code::Unavailable,
        "etcdserver: rpc not supported for learner",
    )
}
pub fn not_implemented(method: &str) -> Status {
    Status::new(Code::Unimplemented, format!("unknown method {method}"))
}

/// An error of a call that etcd's v3lock and v3election services make
/// through etcd's in-process client: clientv3 turns the status into a plain
/// error, so their callers hear its message with code Unknown.
pub fn through_client(s: Status) -> Status {
    Status::new(Code::Unknown, s.message)
}
/// concurrency.ErrElectionNotLeader, as v3election sends it.
pub fn election_not_leader() -> Status {
    Status::new(Code::Unknown, "election: not leader")
}
/// concurrency.ErrElectionNoLeader, as v3election sends it.
pub fn election_no_leader() -> Status {
    Status::new(Code::Unknown, "election: no leader")
}
/// v3election.ErrMissingLeaderKey.
pub fn missing_leader_key() -> Status {
    Status::new(Code::Unknown, "\"leader\" field must be provided")
}
/// concurrency.ErrSessionExpired (etcd 3.5's Mutex; see `concurrency`).
pub fn session_expired() -> Status {
    Status::new(Code::Unknown, "mutex: session is expired")
}

pub fn engine(e: EngineError) -> Status {
    match e {
        EngineError::Compacted => Status::new(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        EngineError::FutureRevision => Status::new(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        EngineError::LeaseNotFound => {
            Status::new(Code::NotFound, "etcdserver: requested lease not found")
        }
        EngineError::LeaseExists => {
            Status::new(Code::FailedPrecondition, "etcdserver: lease already exists")
        }
        EngineError::LeaseTtlTooLarge => {
            Status::new(Code::OutOfRange, "etcdserver: too large lease TTL")
        }
        EngineError::KeyNotFound => key_not_found(),
        EngineError::LeaderChanged | EngineError::HandedOver => {
            Status::new(Code::Unavailable, "etcdserver: leader changed")
        }
        EngineError::NotLeader => Status::new(Code::FailedPrecondition, "etcdserver: not leader"),
        EngineError::LeaderTransferTimeout => Status::new(
            Code::Unavailable,
            "etcdserver: request timed out, leader transfer took too long",
        ),
        EngineError::Timeout => Status::new(Code::Unavailable, "etcdserver: request timed out"),
        EngineError::Membership(m) => {
            use ferrokv_shards::membership as ms;
            let code = match m.as_str() {
                ms::MEMBER_NOT_FOUND => Code::NotFound,
                ms::BAD_URLS => Code::InvalidArgument,
                ms::UNHEALTHY => Code::Unavailable,
                // etcd 3.4 sends this one unmapped.
                ms::NOT_ENOUGH_STARTED => Code::Unknown,
                _ => Code::FailedPrecondition,
            };
            Status::new(code, m)
        }
        EngineError::Auth(a) => auth(&a),
        EngineError::Internal(m) => Status::new(Code::Unavailable, format!("etcdserver: {m}")),
    }
}

/// An auth refusal with etcd's code (`rpctypes/error.go`).
pub fn auth(e: &ferrokv_shards::auth::AuthError) -> Status {
    use ferrokv_shards::auth::AuthError as A;
    let code = match e {
        A::UserEmpty | A::RoleEmpty | A::AuthFailed | A::InvalidAuthMgmt | A::AuthOldRevision => {
            Code::InvalidArgument
        }
        A::PermissionDenied => Code::PermissionDenied,
        A::InvalidAuthToken => Code::Unauthenticated,
        _ => Code::FailedPrecondition,
    };
    Status::new(code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts etcd 3.4 sends (api/v3rpc/rpctypes/error.go; the lock and
    /// election services: clientv3/concurrency, v3election).
    #[test]
    fn messages_match_etcd() {
        let cases = [
            (
                empty_key(),
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
            (
                too_many_ops(),
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                duplicate_key(),
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (
                request_too_large(),
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                no_space(),
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            (
                engine(EngineError::LeaderChanged),
                Code::Unavailable,
                "etcdserver: leader changed",
            ),
            (
                engine(EngineError::Timeout),
                Code::Unavailable,
                "etcdserver: request timed out",
            ),
            (
                engine(EngineError::NotLeader),
                Code::FailedPrecondition,
                "etcdserver: not leader",
            ),
            (
                engine(EngineError::LeaderTransferTimeout),
                Code::Unavailable,
                "etcdserver: request timed out, leader transfer took too long",
            ),
            (
                engine(EngineError::Compacted),
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                engine(EngineError::FutureRevision),
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (
                engine(EngineError::LeaseNotFound),
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                engine(EngineError::LeaseExists),
                Code::FailedPrecondition,
                "etcdserver: lease already exists",
            ),
            (
                engine(EngineError::LeaseTtlTooLarge),
                Code::OutOfRange,
                "etcdserver: too large lease TTL",
            ),
            (
                engine(EngineError::KeyNotFound),
                Code::InvalidArgument,
                "etcdserver: key not found",
            ),
            (
                through_client(engine(EngineError::LeaseNotFound)),
                Code::Unknown,
                "etcdserver: requested lease not found",
            ),
            (election_not_leader(), Code::Unknown, "election: not leader"),
            (election_no_leader(), Code::Unknown, "election: no leader"),
            (no_leader(), Code::Unavailable, "etcdserver: no leader"),
            (
                missing_leader_key(),
                Code::Unknown,
                "\"leader\" field must be provided",
            ),
            (
                session_expired(),
                Code::Unknown,
                "mutex: session is expired",
            ),
        ];
        for (status, code, msg) in cases {
            assert_eq!(status.code, code, "{msg}");
            assert_eq!(status.message, msg);
        }
    }
}
