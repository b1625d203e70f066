/// The one error type of the raft crate. `Clone` because one failure (a WAL
/// error) is handed to every waiting proposer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Wal(#[from] ferrokv_wal::Error),
    #[error("raft: {0}")]
    Raft(String),
    #[error("raft: not the leader (leader is {leader_id})")]
    NotLeader { leader_id: u64 },
    /// The proposal was accepted but its fate is unknown (leadership changed
    /// before it committed); the caller must not assume either outcome.
    #[error("raft: proposal dropped, outcome unknown")]
    ProposalDropped,
    /// The raft records in the WAL do not form a valid log; refuse to start.
    #[error("raft: corrupt log: {0}")]
    Corrupt(String),
    /// The caller's state machine is older than the compacted log.
    #[error("raft: applied index {applied} is below the compacted log start {compacted}")]
    AppliedBelowCompaction { applied: u64, compacted: u64 },
    #[error("raft: compaction index {index} is beyond the applied index {applied}")]
    CompactBeyondApplied { index: u64, applied: u64 },
    /// A conf change committed without effect: raft refused it (another was
    /// still pending, or it would break the configuration).
    #[error("raft: membership change refused: {0}")]
    ConfChangeRefused(String),
    /// Too many requests of this kind are waiting; the caller may retry.
    #[error("raft: too many requests pending")]
    Busy,
    #[error("raft: shut down")]
    Shutdown,
}

impl From<raft::Error> for Error {
    fn from(e: raft::Error) -> Self {
        Error::Raft(e.to_string())
    }
}
