//! This member's auth state as every core reads it: the auth store that
//! shard 0's log builds (applied in log order on every member, so every
//! member holds the same store at the same log position), published as an
//! immutable snapshot that a change replaces whole, and the simple tokens
//! `Authenticate` handed out.
//!
//! Tokens are etcd's `simple` tokens: opaque, registered on every member
//! by the committed record that made them (so any member accepts them),
//! kept in memory only (a restart or an installed snapshot forgets them,
//! and clients authenticate again, as with etcd), valid for
//! `--auth-token-ttl` after their last use, and dropped when their user is
//! deleted or changes password, and all of them when auth is disabled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::auth::{AuthError, AuthOp, AuthStore};

/// etcd's `--auth-token-ttl` default.
pub const TOKEN_TTL_DEFAULT: Duration = Duration::from_secs(300);
/// Bound on live tokens per member: past it the least recently used is
/// dropped (its client authenticates again), so an `Authenticate` loop
/// costs bounded memory.
pub const TOKENS_MAX: usize = 100_000;

/// What shard 0's log carries for auth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthRecord {
    Change(AuthOp),
    /// A token `Authenticate` made for `name` (the password was checked
    /// by the member that proposed it; the log never holds one).
    Token {
        name: String,
        token: String,
    },
}

const TAG_CHANGE: u8 = 1;
const TAG_TOKEN: u8 = 2;

impl AuthRecord {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            AuthRecord::Change(op) => {
                let mut out = vec![TAG_CHANGE];
                out.extend_from_slice(&op.encode());
                out
            }
            AuthRecord::Token { name, token } => {
                let mut out = vec![TAG_TOKEN];
                out.extend_from_slice(&(name.len() as u32).to_le_bytes());
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(token.as_bytes());
                out
            }
        }
    }

    pub fn decode(b: &[u8]) -> Result<AuthRecord, String> {
        match b.split_first() {
            Some((&TAG_CHANGE, rest)) => AuthOp::decode(rest).map(AuthRecord::Change),
            Some((&TAG_TOKEN, rest)) => {
                let cut = || "auth token record cut short".to_string();
                let len = rest.get(..4).ok_or_else(cut)?;
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                let name = rest.get(4..4usize.saturating_add(len)).ok_or_else(cut)?;
                let token = &rest[4 + len..];
                let text = |b: &[u8]| {
                    String::from_utf8(b.to_vec()).map_err(|_| "auth token record: not UTF-8")
                };
                Ok(AuthRecord::Token {
                    name: text(name)?,
                    token: text(token)?,
                })
            }
            _ => Err("auth record: unknown tag".to_string()),
        }
    }
}

/// Who a request runs as and the auth revision it was checked at (etcd's
/// `AuthInfo`): a request decided against an older revision than the one
/// it takes effect at is refused (`revision of auth store is old`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthInfo {
    pub user: String,
    pub revision: u64,
}

struct Token {
    user: String,
    used: Instant,
}

pub struct AuthView {
    store: RwLock<Arc<AuthStore>>,
    tokens: Mutex<HashMap<String, Token>>,
    ttl: Duration,
    /// Notified on every applied record (a change of the store or a token).
    changed: event_listener::Event,
}

impl AuthView {
    pub fn new(ttl: Duration) -> AuthView {
        AuthView {
            store: RwLock::new(Arc::new(AuthStore::default())),
            tokens: Mutex::new(HashMap::new()),
            ttl,
            changed: event_listener::Event::new(),
        }
    }

    /// The store as of the last applied auth record.
    pub fn current(&self) -> Arc<AuthStore> {
        match self.store.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn revision(&self) -> u64 {
        self.current().revision()
    }

    fn publish(&self, store: AuthStore) {
        match self.store.write() {
            Ok(mut s) => *s = Arc::new(store),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(store),
        }
        self.changed.notify(usize::MAX);
    }

    fn with_tokens<T>(&self, f: impl FnOnce(&mut HashMap<String, Token>) -> T) -> T {
        match self.tokens.lock() {
            Ok(mut t) => f(&mut t),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Applies a committed record (every member, in log order). An op that
    /// fails changes nothing, on every member alike.
    pub fn apply(&self, rec: &AuthRecord) -> Result<(), AuthError> {
        match rec {
            AuthRecord::Change(op) => {
                let mut store = (*self.current()).clone();
                store.apply(op)?;
                match op {
                    AuthOp::Disable => self.with_tokens(|t| t.clear()),
                    AuthOp::UserDelete { name } | AuthOp::UserChangePassword { name, .. } => {
                        self.with_tokens(|t| t.retain(|_, tok| &tok.user != name))
                    }
                    _ => {}
                }
                self.publish(store);
                Ok(())
            }
            AuthRecord::Token { name, token } => {
                let now = Instant::now();
                self.with_tokens(|t| {
                    if t.len() >= TOKENS_MAX {
                        let oldest = t.iter().min_by_key(|(_, v)| v.used).map(|(k, _)| k.clone());
                        if let Some(k) = oldest {
                            t.remove(&k);
                        }
                    }
                    t.insert(
                        token.clone(),
                        Token {
                            user: name.clone(),
                            used: now,
                        },
                    );
                });
                self.changed.notify(usize::MAX);
                Ok(())
            }
        }
    }

    /// The store a snapshot holds replaces this one; tokens are forgotten.
    pub fn restore(&self, store: AuthStore) {
        self.with_tokens(|t| t.clear());
        self.publish(store);
    }

    /// Who `token` names, renewing it (etcd's simple tokens live for the
    /// TTL after their last use). None for a token this member does not
    /// hold or that ran out.
    pub fn user_of(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        self.with_tokens(|t| match t.get_mut(token) {
            Some(tok) if now.duration_since(tok.used) <= self.ttl => {
                tok.used = now;
                Some(tok.user.clone())
            }
            Some(_) => {
                t.remove(token);
                None
            }
            None => None,
        })
    }

    /// etcd's `AuthInfoFromCtx`: a token this member does not know is
    /// `invalid auth token`, auth enabled or not (etcd looks a token up
    /// whenever one is sent); otherwise, with auth disabled, nobody in
    /// particular (no check applies); enabled, the token's user, or no
    /// user when the request carries no token (then every check refuses:
    /// `user name is empty`).
    pub fn info(&self, token: Option<&str>) -> Result<Option<AuthInfo>, AuthError> {
        let store = self.current();
        let user = match token {
            Some(t) => self.user_of(t).ok_or(AuthError::InvalidAuthToken)?,
            None => String::new(),
        };
        Ok(store.enabled().then(|| AuthInfo {
            user,
            revision: store.revision(),
        }))
    }

    /// Whether `rec` shows here: its auth revision reached for a change
    /// (`revision`, what the leader left), the token held for a token.
    /// A token takes no revision, so only the token itself shows it.
    fn shows(&self, rec: &AuthRecord, revision: u64) -> bool {
        match rec {
            AuthRecord::Change(_) => self.revision() >= revision,
            AuthRecord::Token { token, .. } => self.with_tokens(|t| t.contains_key(token)),
        }
    }

    /// Waits (up to `max`) until this member has applied auth revision
    /// `revision`; false if it has not by then.
    pub async fn wait_revision(&self, revision: u64, max: Duration) -> bool {
        self.wait_until(|v| v.revision() >= revision, max).await
    }

    /// Waits (up to `max`) until record `rec`, which the leader applied
    /// leaving auth revision `revision`, shows on this member; false if it
    /// does not by then.
    pub async fn wait_applied(&self, rec: &AuthRecord, revision: u64, max: Duration) -> bool {
        self.wait_until(|v| v.shows(rec, revision), max).await
    }

    async fn wait_until(&self, done: impl Fn(&AuthView) -> bool, max: Duration) -> bool {
        let deadline = Instant::now() + max;
        loop {
            let listener = self.changed.listen();
            if done(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let sleep = async {
                glommio::timer::sleep(left).await;
            };
            futures_lite::future::or(listener, sleep).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        for rec in [
            AuthRecord::Change(AuthOp::RoleAdd { name: "r".into() }),
            AuthRecord::Token {
                name: "alice".into(),
                token: "AbCdEfGh.7".into(),
            },
        ] {
            assert_eq!(AuthRecord::decode(&rec.encode()), Ok(rec.clone()));
            let enc = rec.encode();
            for cut in 0..enc.len() {
                let _ = AuthRecord::decode(&enc[..cut]);
            }
        }
        assert!(AuthRecord::decode(&[9]).is_err());
        assert!(AuthRecord::decode(&[TAG_TOKEN, 255, 255, 255, 255]).is_err());
    }

    /// What decodes re-encodes to the very bytes (the shard record fuzz
    /// target asserts it of every record).
    #[test]
    fn decoding_is_canonical() {
        let valid = AuthRecord::Change(AuthOp::RoleGrantPermission {
            name: "r".into(),
            perm: crate::auth::Permission {
                kind: crate::auth::PermKind::ReadWrite,
                key: b"/a".to_vec(),
                range_end: b"/b".to_vec(),
            },
        })
        .encode();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut b = valid.clone();
            let i = next() as usize % b.len();
            b[i] ^= 1 << (next() % 8);
            if next() % 4 == 0 {
                b.truncate(next() as usize % b.len());
            }
            if let Ok(rec) = AuthRecord::decode(&b) {
                assert_eq!(rec.encode(), b, "{rec:?}");
            }
        }
    }

    /// A forwarded Authenticate returns once its token shows here; the
    /// token takes no revision, so waiting for the revision alone would
    /// return before it (a client's next request: `invalid auth token`).
    #[test]
    fn a_token_shows_only_once_applied() {
        let ex = glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let view = std::rc::Rc::new(AuthView::new(TOKEN_TTL_DEFAULT));
                let rec = AuthRecord::Token {
                    name: "alice".into(),
                    token: "t1".into(),
                };
                let rev = view.revision();
                assert!(
                    !view
                        .wait_applied(&rec, rev, Duration::from_millis(20))
                        .await
                );
                let (v, r) = (view.clone(), rec.clone());
                let apply = glommio::spawn_local(async move {
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                    v.apply(&r).unwrap();
                });
                let start = Instant::now();
                assert!(view.wait_applied(&rec, rev, Duration::from_secs(10)).await);
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "woken by the apply"
                );
                apply.await;
            })
            .unwrap();
        ex.join().unwrap();
    }

    #[test]
    fn tokens_follow_their_user() {
        let view = AuthView::new(TOKEN_TTL_DEFAULT);
        let token = |name: &str, token: &str| AuthRecord::Token {
            name: name.into(),
            token: token.into(),
        };
        view.apply(&token("alice", "t1")).unwrap();
        view.apply(&token("bob", "t2")).unwrap();
        assert_eq!(view.user_of("t1").as_deref(), Some("alice"));
        assert_eq!(view.user_of("nope"), None);
        // Disabled auth: no one in particular, but a token is looked up.
        assert_eq!(view.info(None), Ok(None));
        assert_eq!(view.info(Some("t2")), Ok(None));
        assert_eq!(view.info(Some("nope")), Err(AuthError::InvalidAuthToken));
        let mut store = AuthStore::default();
        for op in [
            AuthOp::UserAdd {
                name: "root".into(),
                hash: String::new(),
                no_password: true,
            },
            AuthOp::RoleAdd {
                name: "root".into(),
            },
            AuthOp::UserGrantRole {
                user: "root".into(),
                role: "root".into(),
            },
            AuthOp::UserAdd {
                name: "alice".into(),
                hash: String::new(),
                no_password: true,
            },
            AuthOp::Enable,
        ] {
            store.apply(&op).unwrap();
        }
        view.restore(store);
        // A restore forgets tokens.
        assert_eq!(view.info(Some("t1")), Err(AuthError::InvalidAuthToken));
        view.apply(&token("alice", "t3")).unwrap();
        let rev = view.revision();
        assert_eq!(
            view.info(Some("t3")),
            Ok(Some(AuthInfo {
                user: "alice".into(),
                revision: rev
            }))
        );
        assert_eq!(
            view.info(None),
            Ok(Some(AuthInfo {
                user: String::new(),
                revision: rev
            }))
        );
        view.apply(&AuthRecord::Change(AuthOp::UserDelete {
            name: "alice".into(),
        }))
        .unwrap();
        assert_eq!(view.user_of("t3"), None);
        assert!(view.revision() > rev);
    }

    #[test]
    fn tokens_run_out_after_the_ttl_since_last_use() {
        let view = AuthView::new(Duration::ZERO);
        view.apply(&AuthRecord::Token {
            name: "a".into(),
            token: "t".into(),
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(view.user_of("t"), None);
    }
}
