//! Auth calls: a change of the auth store (or a token) is a record in
//! shard 0's log, proposed by the cluster leader; every member applies it
//! there ([`crate::auth_view`]).

use std::sync::Arc;

use crate::auth::AuthError;
use crate::auth_view::{AuthRecord, AuthView};
use crate::error::Error;
use crate::forward;
use crate::shard::ShardMsg;

use super::{Engine, Route, LEADER_WAIT};

impl Engine {
    /// This member's auth state.
    pub fn auth(&self) -> &Arc<AuthView> {
        &self.inner.local.auth
    }

    /// A handle whose writes were checked against auth revision `rev`:
    /// one forwarded to a leader whose auth store has moved past it is
    /// refused there (`revision of auth store is old`), as etcd refuses a
    /// request applied after the auth change that would have decided it.
    pub fn checked_at(&self, rev: u64) -> Engine {
        Engine {
            inner: self.inner.clone(),
            auth_rev: Some(rev),
        }
    }

    /// The refusal a write checked at `rev` gets from this (the leader's)
    /// auth store, if any.
    pub(crate) fn stale_auth(&self, rev: u64) -> Result<(), Error> {
        if self.auth().revision() > rev {
            return Err(Error::Auth(AuthError::AuthOldRevision));
        }
        Ok(())
    }

    /// Commits an auth change or token through the leader; the auth
    /// revision it left, visible on this member once this returns.
    pub async fn auth_change(&self, rec: AuthRecord) -> Result<u64, Error> {
        match self.route().await? {
            Route::Here => self.auth_here(rec).await,
            Route::To(l) => {
                let b = self.forward(l, forward::AUTH, rec.encode()).await?;
                let rev = forward::read_ints(&b, 1)?[0] as u64;
                // The client's next request here must see what it did:
                // a token it was just given too, though it takes no
                // revision.
                if !self.auth().wait_applied(&rec, rev, LEADER_WAIT).await {
                    return Err(Error::Timeout);
                }
                Ok(rev)
            }
        }
    }

    pub(crate) async fn auth_here(&self, rec: AuthRecord) -> Result<u64, Error> {
        self.serving().await?;
        self.ask(0, |reply| ShardMsg::Auth(rec, reply)).await?
    }
}
