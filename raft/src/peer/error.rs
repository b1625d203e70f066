use std::time::Duration;

/// Errors of the peer transport. `Clone` because one broken connection fails
/// every call that was waiting on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The configuration cannot work (reported by `start`).
    #[error("peer transport: bad configuration: {0}")]
    Config(String),
    #[error("peer transport: cannot listen on {addr}: {reason}")]
    Listen {
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("peer transport: member {0:x} is not a known peer")]
    UnknownMember(u64),
    /// No connection to the peer came up before the call's deadline;
    /// `reason` is the last dial or handshake failure.
    #[error("peer transport: member {member:x} is unreachable: {reason}")]
    Unreachable { member: u64, reason: String },
    /// The call was sent (or waited behind a slow peer) and no reply came
    /// within `call_timeout`. The peer may or may not have acted on it.
    #[error("peer transport: call to member {member:x} timed out after {timeout:?}")]
    Timeout { member: u64, timeout: Duration },
    /// The connection carrying the call broke before its reply arrived. The
    /// peer may or may not have acted on it.
    #[error("peer transport: connection to member {member:x} lost before the reply: {reason}")]
    ConnectionLost { member: u64, reason: String },
    /// The peer's outbound queue (`queue_messages_max`) is full.
    #[error("peer transport: queue to member {member:x} is full")]
    QueueFull { member: u64 },
    /// `calls_in_flight_max` calls to this peer are already waiting.
    #[error("peer transport: {max} calls to member {member:x} already in flight")]
    TooManyCalls { member: u64, max: usize },
    /// The call would not fit one frame (`frame_bytes_max`).
    #[error("peer transport: a call of {bytes} bytes exceeds the frame limit of {max} bytes")]
    TooLarge { bytes: usize, max: usize },
    /// The peer's handler answered with an error.
    #[error("{0}")]
    Remote(String),
    /// The member was removed from the cluster (`PeerHandle::remove_peer`):
    /// its pending and later calls fail so, and it cannot be added back.
    /// etcd's words for a removed member.
    #[error("peer transport: member {member:x} has been permanently removed from the cluster")]
    Removed { member: u64 },
    /// A member list for `PeerHandle::set_members` larger than a handshake
    /// frame can carry.
    #[error("peer transport: a member list of {bytes} bytes exceeds the limit of {max} bytes")]
    MembersTooLarge { bytes: usize, max: usize },
    /// The transport was stopped (or its executor went away).
    #[error("peer transport: stopped")]
    Stopped,
}
