/// Errors of the engine, each mapped to etcd's gRPC status in `server/`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// The write's outcome is unknown: this member stopped leading while it
    /// was in flight.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// A leader-only request (MoveLeader) reached a member that does not lead.
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    /// No member serves writes (no leader elected within the wait).
    #[error("etcdserver: request timed out")]
    Timeout,
    /// Between members only: the leader a membership change was forwarded
    /// to handed its leadership over instead of making it; the member that
    /// forwarded it asks the new leader.
    #[error("ferrokv: leadership handed over for a membership change")]
    HandedOver,
    /// A membership change refused, in etcd's words (the whole message).
    #[error("{0}")]
    Membership(String),
    /// An auth refusal, in etcd's words.
    #[error("{0}")]
    Auth(crate::auth::AuthError),
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl From<ferrokv_mvcc::Error> for Error {
    fn from(e: ferrokv_mvcc::Error) -> Self {
        match e {
            ferrokv_mvcc::Error::Compacted => Error::Compacted,
            ferrokv_mvcc::Error::FutureRevision => Error::FutureRevision,
            other => Error::Internal(other.to_string()),
        }
    }
}
