//! etcd 3.4's auth store as a sans-IO state machine: users, roles, their
//! key permissions, the enabled flag and the auth revision.
//!
//! It follows `auth/store.go` and `auth/range_perm_cache.go` of etcd's
//! release-3.4. Every member applies the same committed `AuthOp`s in log
//! order, so `apply` is deterministic: no clock, no randomness, no hashing.
//! Passwords are bcrypt-hashed by the proposer (`hash_password`) before the
//! op is proposed; the log only ever carries the hash.
//!
//! Revision: a new store is at 1 (etcd's `NewAuthStore` commits revision 1
//! on an empty backend). Every successful user, role or permission change
//! and `AuthDisable` (when enabled) add 1; `AuthEnable` does not (etcd's
//! `AuthEnable` only reloads the revision), nor do the no-ops etcd answers
//! with success (enabling twice, disabling twice, granting a role the user
//! already has).

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// etcd's `--bcrypt-cost` default (Go's `bcrypt.DefaultCost`).
pub const DEFAULT_BCRYPT_COST: u32 = 10;

/// Go's `bcrypt.MinCost` and `bcrypt.MaxCost`.
const BCRYPT_COST_MIN: u32 = 4;
const BCRYPT_COST_MAX: u32 = 31;

/// Longest password Go's bcrypt hashes (`bcrypt.ErrPasswordTooLong`).
const BCRYPT_PASSWORD_MAX: usize = 72;

const ROOT_USER: &str = "root";
const ROOT_ROLE: &str = "root";

/// Version byte leading an encoded store and an encoded op.
const FORMAT_VERSION: u8 = 1;

/// etcd's `authpb.Permission.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PermKind {
    Read,
    Write,
    ReadWrite,
}

impl PermKind {
    fn code(self) -> u8 {
        match self {
            PermKind::Read => 0,
            PermKind::Write => 1,
            PermKind::ReadWrite => 2,
        }
    }

    fn from_code(c: u8) -> Option<PermKind> {
        match c {
            0 => Some(PermKind::Read),
            1 => Some(PermKind::Write),
            2 => Some(PermKind::ReadWrite),
            _ => None,
        }
    }

    fn grants(self, write: bool) -> bool {
        match self {
            PermKind::ReadWrite => true,
            PermKind::Read => !write,
            PermKind::Write => write,
        }
    }
}

/// A key permission: `range_end` empty is the key alone, `"\0"` is every
/// key from `key` on, otherwise `[key, range_end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub kind: PermKind,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// The bcrypt hash; "" for a user added with `no_password` (etcd keeps
    /// a hash a later `UserChangePassword` sets, and still refuses the
    /// user a password login).
    pub password_hash: String,
    /// Sorted, unique.
    pub roles: Vec<String>,
    pub no_password: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    /// Sorted by (key, range_end), unique by (key, range_end).
    pub perms: Vec<Permission>,
}

/// A change of the auth store, as the log carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOp {
    Enable,
    Disable,
    UserAdd {
        name: String,
        hash: String,
        no_password: bool,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        hash: String,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        name: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        role: String,
    },
    RoleGrantPermission {
        name: String,
        perm: Permission,
    },
    RoleRevokePermission {
        role: String,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
}

/// etcd's auth errors, each with the message a client sees: the
/// `rpctypes` text of the gRPC error `togRPCError` maps it to. etcd 3.4
/// maps no gRPC error for `ErrNoPasswordUser`: a client sees the auth
/// package's own text for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
}

/// Every variant, for `from_message`.
const ALL_ERRORS: [AuthError; 18] = [
    AuthError::RootUserNotExist,
    AuthError::RootRoleNotExist,
    AuthError::UserAlreadyExist,
    AuthError::UserEmpty,
    AuthError::UserNotFound,
    AuthError::RoleAlreadyExist,
    AuthError::RoleNotFound,
    AuthError::RoleEmpty,
    AuthError::AuthFailed,
    AuthError::PermissionNotGiven,
    AuthError::PermissionDenied,
    AuthError::RoleNotGranted,
    AuthError::PermissionNotGranted,
    AuthError::AuthNotEnabled,
    AuthError::InvalidAuthToken,
    AuthError::InvalidAuthMgmt,
    AuthError::AuthOldRevision,
    AuthError::NoPasswordUser,
];

impl AuthError {
    /// The error whose `Display` is `msg` (errors travel between members
    /// as text).
    pub fn from_message(msg: &str) -> Option<AuthError> {
        ALL_ERRORS.iter().find(|e| e.to_string() == msg).cloned()
    }
}

/// bcrypt hash of `password` at `cost` (etcd's `--bcrypt-cost`), in Go's
/// `$2a$` form. Like Go's `GenerateFromPassword` it refuses a password
/// longer than 72 bytes rather than hash part of it.
pub fn hash_password(password: &str, cost: u32) -> Result<String, String> {
    if !(BCRYPT_COST_MIN..=BCRYPT_COST_MAX).contains(&cost) {
        return Err(format!(
            "crypto/bcrypt: cost {cost} is outside allowed range ({BCRYPT_COST_MIN},{BCRYPT_COST_MAX})"
        ));
    }
    if password.len() > BCRYPT_PASSWORD_MAX {
        return Err("bcrypt: password length exceeds 72 bytes".to_string());
    }
    // At 72 bytes the key Go's bcrypt expands (the password and a NUL)
    // loses its NUL, as this crate's truncating hash does too.
    bcrypt::hash_with_result(password, cost)
        .map(|h| h.format_for_version(bcrypt::Version::TwoA))
        .map_err(|e| e.to_string())
}

/// What a valid op does.
enum Effect {
    /// etcd answers success and changes nothing.
    Nothing,
    /// Changes the store; `bump`: etcd commits a new auth revision.
    Change { bump: bool },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthStore {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
}

impl Default for AuthStore {
    /// A new store: disabled, no users or roles, revision 1 (etcd's
    /// `NewAuthStore` commits revision 1 on an empty backend).
    fn default() -> AuthStore {
        AuthStore {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

impl AuthStore {
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// What etcd would answer, without changing anything.
    pub fn check(&self, op: &AuthOp) -> Result<(), AuthError> {
        self.plan(op).map(|_| ())
    }

    /// Applies a committed op: on error nothing changes.
    pub fn apply(&mut self, op: &AuthOp) -> Result<(), AuthError> {
        let bump = match self.plan(op)? {
            Effect::Nothing => return Ok(()),
            Effect::Change { bump } => bump,
        };
        // Every precondition was checked by `plan`: what follows only
        // changes the store.
        match op {
            AuthOp::Enable => self.enabled = true,
            AuthOp::Disable => self.enabled = false,
            AuthOp::UserAdd {
                name,
                hash,
                no_password,
            } => {
                let user = User {
                    name: name.clone(),
                    // etcd hashes no password for a no-password user.
                    password_hash: if *no_password {
                        String::new()
                    } else {
                        hash.clone()
                    },
                    roles: Vec::new(),
                    no_password: *no_password,
                };
                self.users.insert(name.clone(), user);
            }
            AuthOp::UserDelete { name } => {
                self.users.remove(name);
            }
            AuthOp::UserChangePassword { name, hash } => {
                if let Some(u) = self.users.get_mut(name) {
                    u.password_hash = hash.clone();
                }
            }
            AuthOp::UserGrantRole { user, role } => {
                if let Some(u) = self.users.get_mut(user) {
                    if let Err(at) = u.roles.binary_search(role) {
                        u.roles.insert(at, role.clone());
                    }
                }
            }
            AuthOp::UserRevokeRole { name, role } => {
                if let Some(u) = self.users.get_mut(name) {
                    u.roles.retain(|r| r != role);
                }
            }
            AuthOp::RoleAdd { name } => {
                self.roles.insert(
                    name.clone(),
                    Role {
                        name: name.clone(),
                        perms: Vec::new(),
                    },
                );
            }
            AuthOp::RoleDelete { role } => {
                self.roles.remove(role);
                for u in self.users.values_mut() {
                    u.roles.retain(|r| r != role);
                }
            }
            AuthOp::RoleGrantPermission { name, perm } => {
                // etcd 3.4: the first permission at or after the key is
                // updated if it is the same range; otherwise the new one is
                // appended and the list sorted by key (stable, so equal
                // keys stay in the order granted, as Go's sort keeps them
                // in lists this short).
                if let Some(r) = self.roles.get_mut(name) {
                    let at = r.perms.partition_point(|p| p.key < perm.key);
                    match r.perms.get_mut(at) {
                        Some(p) if p.key == perm.key && p.range_end == perm.range_end => {
                            p.kind = perm.kind;
                        }
                        _ => {
                            r.perms.push(perm.clone());
                            r.perms.sort_by(|a, b| a.key.cmp(&b.key));
                        }
                    }
                }
            }
            AuthOp::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                if let Some(r) = self.roles.get_mut(role) {
                    r.perms
                        .retain(|p| p.key != *key || p.range_end != *range_end);
                }
            }
        }
        if bump {
            self.revision = self.revision.saturating_add(1);
        }
        Ok(())
    }

    /// etcd's checks for `op`, in etcd's order, and what it then does.
    fn plan(&self, op: &AuthOp) -> Result<Effect, AuthError> {
        let changed = Ok(Effect::Change { bump: true });
        match op {
            AuthOp::Enable => {
                if self.enabled {
                    return Ok(Effect::Nothing);
                }
                let root = self
                    .users
                    .get(ROOT_USER)
                    .ok_or(AuthError::RootUserNotExist)?;
                if !has_root_role(root) {
                    return Err(AuthError::RootRoleNotExist);
                }
                Ok(Effect::Change { bump: false })
            }
            AuthOp::Disable => {
                if !self.enabled {
                    return Ok(Effect::Nothing);
                }
                changed
            }
            AuthOp::UserAdd { name, .. } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                changed
            }
            AuthOp::UserDelete { name } => {
                if self.enabled && name == ROOT_USER {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.users.get(name).ok_or(AuthError::UserNotFound)?;
                changed
            }
            AuthOp::UserChangePassword { name, .. } => {
                self.users.get(name).ok_or(AuthError::UserNotFound)?;
                changed
            }
            AuthOp::UserGrantRole { user, role } => {
                let u = self.users.get(user).ok_or(AuthError::UserNotFound)?;
                // etcd grants the root role whether or not it exists.
                if role != ROOT_ROLE && !self.roles.contains_key(role) {
                    return Err(AuthError::RoleNotFound);
                }
                if u.roles.binary_search(role).is_ok() {
                    return Ok(Effect::Nothing);
                }
                changed
            }
            AuthOp::UserRevokeRole { name, role } => {
                if self.enabled && name == ROOT_USER && role == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let u = self.users.get(name).ok_or(AuthError::UserNotFound)?;
                if !u.roles.iter().any(|r| r == role) {
                    return Err(AuthError::RoleNotGranted);
                }
                changed
            }
            AuthOp::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                changed
            }
            AuthOp::RoleDelete { role } => {
                if self.enabled && role == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.roles.get(role).ok_or(AuthError::RoleNotFound)?;
                changed
            }
            AuthOp::RoleGrantPermission { name, .. } => {
                // etcd 3.4 takes any range (3.5 refuses empty and
                // backwards ones): a backwards range permits nothing.
                self.roles.get(name).ok_or(AuthError::RoleNotFound)?;
                changed
            }
            AuthOp::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let r = self.roles.get(role).ok_or(AuthError::RoleNotFound)?;
                if !r
                    .perms
                    .iter()
                    .any(|p| p.key == *key && p.range_end == *range_end)
                {
                    return Err(AuthError::PermissionNotGranted);
                }
                changed
            }
        }
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Every user name, sorted.
    pub fn users(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Every role name, sorted.
    pub fn roles(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// `Authenticate`'s password check (etcd's `CheckPassword`): auth
    /// disabled is `AuthNotEnabled`; an unknown user, a wrong password and
    /// a no-password user are all `AuthFailed`.
    pub fn verify_password(&self, name: &str, password: &str) -> Result<(), AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(AuthError::AuthFailed)?;
        if user.no_password {
            return Err(AuthError::AuthFailed);
        }
        match bcrypt::verify(password, &user.password_hash) {
            Ok(true) => Ok(()),
            _ => Err(AuthError::AuthFailed),
        }
    }

    /// etcd's `IsRangePermitted` (`write` false) and `IsPutPermitted` /
    /// `IsDeleteRangePermitted` (`write` true): `range_end` empty is the
    /// key alone, `"\0"` every key from `key` on, otherwise
    /// `[key, range_end)`; permitted when the user's roles' permissions of
    /// that kind together cover the whole range.
    pub fn permitted(
        &self,
        user: &str,
        key: &[u8],
        range_end: &[u8],
        write: bool,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let u = self.users.get(user).ok_or(AuthError::PermissionDenied)?;
        if has_root_role(u) {
            return Ok(());
        }
        let perms = self.merged_perms(u, write);
        let ok = if range_end.is_empty() {
            // checkKeyPoint: some permission intersects [key, key+"\0").
            let point = Interval::point(key);
            perms.iter().any(|p| point.overlaps(p))
        } else {
            // checkKeyInterval: "\0" is open-ended (the affine infinity).
            let end = if is_open_ended(range_end) {
                &[][..]
            } else {
                range_end
            };
            contains(
                &perms,
                &Interval {
                    begin: key.to_vec(),
                    end: end.to_vec(),
                },
            )
        };
        if ok {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// etcd's `IsAdminPermitted`: the user holds the root role.
    pub fn admin(&self, user: &str) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let u = self.users.get(user).ok_or(AuthError::UserNotFound)?;
        if !has_root_role(u) {
            return Err(AuthError::PermissionDenied);
        }
        Ok(())
    }

    /// etcd's `getMergedPerms`: the intervals of every permission of the
    /// user's roles that grants `write` (or read), sorted by begin.
    fn merged_perms(&self, user: &User, write: bool) -> Vec<Interval> {
        let mut out: Vec<Interval> = user
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.perms.iter())
            .filter(|p| p.kind.grants(write))
            .map(Interval::of_perm)
            .collect();
        out.sort_by(|a, b| affine_cmp(&a.begin, &b.begin).then(affine_cmp(&a.end, &b.end)));
        out
    }

    /// The whole store, for snapshots.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::new();
        w.push(FORMAT_VERSION);
        w.push(u8::from(self.enabled));
        w.extend_from_slice(&self.revision.to_be_bytes());
        put_len(&mut w, self.users.len());
        for u in self.users.values() {
            put_bytes(&mut w, u.name.as_bytes());
            put_bytes(&mut w, u.password_hash.as_bytes());
            w.push(u8::from(u.no_password));
            put_len(&mut w, u.roles.len());
            for r in &u.roles {
                put_bytes(&mut w, r.as_bytes());
            }
        }
        put_len(&mut w, self.roles.len());
        for r in self.roles.values() {
            put_bytes(&mut w, r.name.as_bytes());
            put_len(&mut w, r.perms.len());
            for p in &r.perms {
                put_perm(&mut w, p);
            }
        }
        w
    }

    /// The store `encode` made; Err on anything else (never panics).
    pub fn decode(b: &[u8]) -> Result<AuthStore, String> {
        let mut r = Reader::new(b);
        r.version()?;
        let enabled = r.bool()?;
        let revision = r.u64()?;
        let mut users = BTreeMap::new();
        let mut prev: Option<String> = None;
        for _ in 0..r.len()? {
            let name = r.string()?;
            if prev.as_ref().is_some_and(|p| *p >= name) {
                return Err("auth store: users out of order".into());
            }
            let password_hash = r.string()?;
            let no_password = r.bool()?;
            let mut roles: Vec<String> = Vec::new();
            for _ in 0..r.len()? {
                let role = r.string()?;
                if roles.last().is_some_and(|p| *p >= role) {
                    return Err(format!("auth store: roles of user {name:?} out of order"));
                }
                roles.push(role);
            }
            prev = Some(name.clone());
            users.insert(
                name.clone(),
                User {
                    name,
                    password_hash,
                    roles,
                    no_password,
                },
            );
        }
        let mut roles = BTreeMap::new();
        let mut prev: Option<String> = None;
        for _ in 0..r.len()? {
            let name = r.string()?;
            if prev.as_ref().is_some_and(|p| *p >= name) {
                return Err("auth store: roles out of order".into());
            }
            let mut perms: Vec<Permission> = Vec::new();
            for _ in 0..r.len()? {
                let p = r.perm()?;
                if perms.last().is_some_and(|q| q.key > p.key) {
                    return Err(format!(
                        "auth store: permissions of role {name:?} out of order"
                    ));
                }
                perms.push(p);
            }
            prev = Some(name.clone());
            roles.insert(name.clone(), Role { name, perms });
        }
        r.end()?;
        Ok(AuthStore {
            enabled,
            revision,
            users,
            roles,
        })
    }
}

const OP_ENABLE: u8 = 1;
const OP_DISABLE: u8 = 2;
const OP_USER_ADD: u8 = 3;
const OP_USER_DELETE: u8 = 4;
const OP_USER_CHANGE_PASSWORD: u8 = 5;
const OP_USER_GRANT_ROLE: u8 = 6;
const OP_USER_REVOKE_ROLE: u8 = 7;
const OP_ROLE_ADD: u8 = 8;
const OP_ROLE_DELETE: u8 = 9;
const OP_ROLE_GRANT_PERMISSION: u8 = 10;
const OP_ROLE_REVOKE_PERMISSION: u8 = 11;

impl AuthOp {
    /// etcd's name of the request (for logs: never a hash).
    pub fn name(&self) -> &'static str {
        match self {
            AuthOp::Enable => "AuthEnable",
            AuthOp::Disable => "AuthDisable",
            AuthOp::UserAdd { .. } => "UserAdd",
            AuthOp::UserDelete { .. } => "UserDelete",
            AuthOp::UserChangePassword { .. } => "UserChangePassword",
            AuthOp::UserGrantRole { .. } => "UserGrantRole",
            AuthOp::UserRevokeRole { .. } => "UserRevokeRole",
            AuthOp::RoleAdd { .. } => "RoleAdd",
            AuthOp::RoleDelete { .. } => "RoleDelete",
            AuthOp::RoleGrantPermission { .. } => "RoleGrantPermission",
            AuthOp::RoleRevokePermission { .. } => "RoleRevokePermission",
        }
    }

    /// The op as a log record.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = vec![FORMAT_VERSION];
        let strs = |w: &mut Vec<u8>, tag: u8, ss: &[&str]| {
            w.push(tag);
            for s in ss {
                put_bytes(w, s.as_bytes());
            }
        };
        match self {
            AuthOp::Enable => w.push(OP_ENABLE),
            AuthOp::Disable => w.push(OP_DISABLE),
            AuthOp::UserAdd {
                name,
                hash,
                no_password,
            } => {
                strs(&mut w, OP_USER_ADD, &[name, hash]);
                w.push(u8::from(*no_password));
            }
            AuthOp::UserDelete { name } => strs(&mut w, OP_USER_DELETE, &[name]),
            AuthOp::UserChangePassword { name, hash } => {
                strs(&mut w, OP_USER_CHANGE_PASSWORD, &[name, hash])
            }
            AuthOp::UserGrantRole { user, role } => strs(&mut w, OP_USER_GRANT_ROLE, &[user, role]),
            AuthOp::UserRevokeRole { name, role } => {
                strs(&mut w, OP_USER_REVOKE_ROLE, &[name, role])
            }
            AuthOp::RoleAdd { name } => strs(&mut w, OP_ROLE_ADD, &[name]),
            AuthOp::RoleDelete { role } => strs(&mut w, OP_ROLE_DELETE, &[role]),
            AuthOp::RoleGrantPermission { name, perm } => {
                strs(&mut w, OP_ROLE_GRANT_PERMISSION, &[name]);
                put_perm(&mut w, perm);
            }
            AuthOp::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                strs(&mut w, OP_ROLE_REVOKE_PERMISSION, &[role]);
                put_bytes(&mut w, key);
                put_bytes(&mut w, range_end);
            }
        }
        w
    }

    /// The op `encode` made; Err on anything else (never panics).
    pub fn decode(b: &[u8]) -> Result<AuthOp, String> {
        let mut r = Reader::new(b);
        r.version()?;
        let op = match r.u8()? {
            OP_ENABLE => AuthOp::Enable,
            OP_DISABLE => AuthOp::Disable,
            OP_USER_ADD => AuthOp::UserAdd {
                name: r.string()?,
                hash: r.string()?,
                no_password: r.bool()?,
            },
            OP_USER_DELETE => AuthOp::UserDelete { name: r.string()? },
            OP_USER_CHANGE_PASSWORD => AuthOp::UserChangePassword {
                name: r.string()?,
                hash: r.string()?,
            },
            OP_USER_GRANT_ROLE => AuthOp::UserGrantRole {
                user: r.string()?,
                role: r.string()?,
            },
            OP_USER_REVOKE_ROLE => AuthOp::UserRevokeRole {
                name: r.string()?,
                role: r.string()?,
            },
            OP_ROLE_ADD => AuthOp::RoleAdd { name: r.string()? },
            OP_ROLE_DELETE => AuthOp::RoleDelete { role: r.string()? },
            OP_ROLE_GRANT_PERMISSION => AuthOp::RoleGrantPermission {
                name: r.string()?,
                perm: r.perm()?,
            },
            OP_ROLE_REVOKE_PERMISSION => AuthOp::RoleRevokePermission {
                role: r.string()?,
                key: r.bytes()?.to_vec(),
                range_end: r.bytes()?.to_vec(),
            },
            t => return Err(format!("auth op: unknown tag {t}")),
        };
        r.end()?;
        Ok(op)
    }
}

/// etcd's `hasRootRole`: the user holds the root role (whether or not a
/// role of that name exists).
fn has_root_role(u: &User) -> bool {
    u.roles
        .binary_search_by(|r| r.as_str().cmp(ROOT_ROLE))
        .is_ok()
}

/// etcd's `isOpenEnded`: a range end of "\0" is every key from the start.
fn is_open_ended(range_end: &[u8]) -> bool {
    range_end == [0]
}

/// etcd's `adt.BytesAffineComparable`: bytewise, with the empty slice the
/// largest of all (the end of an open-ended range).
fn affine_cmp(a: &[u8], b: &[u8]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

/// `[begin, end)` in affine order (`end` empty: no upper bound).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Interval {
    begin: Vec<u8>,
    end: Vec<u8>,
}

impl Interval {
    /// etcd's `NewBytesAffinePoint`: `[key, key+"\0")`.
    fn point(key: &[u8]) -> Interval {
        let mut end = Vec::with_capacity(key.len() + 1);
        end.extend_from_slice(key);
        end.push(0);
        Interval {
            begin: key.to_vec(),
            end,
        }
    }

    /// A permission's interval, as `getMergedPerms` builds it.
    fn of_perm(p: &Permission) -> Interval {
        if p.range_end.is_empty() {
            Interval::point(&p.key)
        } else if is_open_ended(&p.range_end) {
            Interval {
                begin: p.key.clone(),
                end: Vec::new(),
            }
        } else {
            Interval {
                begin: p.key.clone(),
                end: p.range_end.clone(),
            }
        }
    }

    /// etcd's `Interval.Compare(self, other) == 0` (the tree visits a
    /// node when the queried interval compares 0 to it).
    fn overlaps(&self, other: &Interval) -> bool {
        let left = affine_cmp(&self.begin, &other.begin).is_lt()
            && affine_cmp(&self.end, &other.begin).is_le();
        let right = affine_cmp(&self.begin, &other.end).is_ge();
        !left && !right
    }
}

/// etcd's `IntervalTree.Contains`: the intervals overlapping `ivl`, in
/// order of begin, are contiguous and reach from at most its begin to at
/// least its end.
fn contains(sorted: &[Interval], ivl: &Interval) -> bool {
    let mut span: Option<(&[u8], &[u8])> = None;
    for n in sorted.iter().filter(|n| ivl.overlaps(n)) {
        match span {
            None => span = Some((&n.begin, &n.end)),
            Some((begin, max_end)) => {
                if affine_cmp(max_end, &n.begin).is_lt() {
                    return false;
                }
                if affine_cmp(&n.end, max_end).is_gt() {
                    span = Some((begin, &n.end));
                }
            }
        }
    }
    match span {
        Some((begin, max_end)) => {
            affine_cmp(max_end, &ivl.end).is_ge() && affine_cmp(begin, &ivl.begin).is_le()
        }
        None => false,
    }
}

fn put_len(w: &mut Vec<u8>, n: usize) {
    // Lengths past u32 cannot come from etcd's requests (gRPC's limit is
    // far below); saturating keeps encode total, decode then refuses it.
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    w.extend_from_slice(&n.to_be_bytes());
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_len(w, b.len());
    w.extend_from_slice(b);
}

fn put_perm(w: &mut Vec<u8>, p: &Permission) {
    w.push(p.kind.code());
    put_bytes(w, &p.key);
    put_bytes(w, &p.range_end);
}

/// Reads what `put_*` wrote, refusing anything short or malformed.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.b.len() {
            return Err(format!(
                "auth: record cut short ({n} bytes wanted, {} left)",
                self.b.len()
            ));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        let b = self.take(1)?;
        b.first()
            .copied()
            .ok_or_else(|| "auth: record cut short".into())
    }

    fn bool(&mut self) -> Result<bool, String> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(format!("auth: bad flag byte {v}")),
        }
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        let a: [u8; 4] = b.try_into().map_err(|_| "auth: record cut short")?;
        Ok(u32::from_be_bytes(a))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let a: [u8; 8] = b.try_into().map_err(|_| "auth: record cut short")?;
        Ok(u64::from_be_bytes(a))
    }

    fn len(&mut self) -> Result<usize, String> {
        usize::try_from(self.u32()?).map_err(|_| "auth: length too large".to_string())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| "auth: name not UTF-8".to_string())
    }

    fn perm(&mut self) -> Result<Permission, String> {
        let code = self.u8()?;
        let kind =
            PermKind::from_code(code).ok_or_else(|| format!("auth: bad permission type {code}"))?;
        Ok(Permission {
            kind,
            key: self.bytes()?.to_vec(),
            range_end: self.bytes()?.to_vec(),
        })
    }

    fn version(&mut self) -> Result<(), String> {
        match self.u8()? {
            FORMAT_VERSION => Ok(()),
            v => Err(format!("auth: unknown format version {v}")),
        }
    }

    fn end(&self) -> Result<(), String> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(format!("auth: {} trailing bytes", self.b.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> String {
        v.to_string()
    }

    fn perm(kind: PermKind, key: &str, range_end: &str) -> Permission {
        Permission {
            kind,
            key: key.as_bytes().to_vec(),
            range_end: range_end.as_bytes().to_vec(),
        }
    }

    fn user_add(name: &str, password: &str) -> AuthOp {
        AuthOp::UserAdd {
            name: s(name),
            hash: hash_password(password, 4).unwrap(),
            no_password: false,
        }
    }

    fn role_add(name: &str) -> AuthOp {
        AuthOp::RoleAdd { name: s(name) }
    }

    fn grant_role(user: &str, role: &str) -> AuthOp {
        AuthOp::UserGrantRole {
            user: s(user),
            role: s(role),
        }
    }

    fn revoke_role(user: &str, role: &str) -> AuthOp {
        AuthOp::UserRevokeRole {
            name: s(user),
            role: s(role),
        }
    }

    fn grant_perm(role: &str, p: Permission) -> AuthOp {
        AuthOp::RoleGrantPermission {
            name: s(role),
            perm: p,
        }
    }

    fn revoke_perm(role: &str, key: &str, range_end: &str) -> AuthOp {
        AuthOp::RoleRevokePermission {
            role: s(role),
            key: key.as_bytes().to_vec(),
            range_end: range_end.as_bytes().to_vec(),
        }
    }

    fn apply_all(st: &mut AuthStore, ops: &[AuthOp]) {
        for op in ops {
            st.apply(op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
        }
    }

    /// Root user with the root role, and auth enabled.
    fn enabled_store() -> AuthStore {
        let mut st = AuthStore::default();
        apply_all(
            &mut st,
            &[
                user_add("root", "rootpw"),
                role_add("root"),
                grant_role("root", "root"),
                AuthOp::Enable,
            ],
        );
        st
    }

    /// `check` agrees with `apply`, and a failed `apply` changes nothing.
    fn expect_err(st: &mut AuthStore, op: AuthOp, want: AuthError) {
        let before = st.clone();
        assert_eq!(st.check(&op), Err(want.clone()), "check {op:?}");
        assert_eq!(st.apply(&op), Err(want), "apply {op:?}");
        assert_eq!(*st, before, "failed {op:?} changed the store");
    }

    /// Applies `op` (which must succeed) and checks the revision moved by
    /// `bump`.
    fn expect_ok(st: &mut AuthStore, op: AuthOp, bump: u64) {
        let rev = st.revision();
        assert_eq!(st.check(&op), Ok(()), "check {op:?}");
        assert_eq!(st.apply(&op), Ok(()), "apply {op:?}");
        assert_eq!(st.revision(), rev + bump, "revision after {op:?}");
    }

    #[test]
    fn new_store_is_disabled_at_revision_one() {
        let st = AuthStore::default();
        assert!(!st.enabled());
        assert_eq!(st.revision(), 1);
        assert!(st.users().is_empty());
        assert!(st.roles().is_empty());
    }

    #[test]
    fn enable_needs_root_user_with_root_role() {
        let mut st = AuthStore::default();
        expect_err(&mut st, AuthOp::Enable, AuthError::RootUserNotExist);
        expect_ok(&mut st, user_add("root", "pw"), 1);
        expect_err(&mut st, AuthOp::Enable, AuthError::RootRoleNotExist);
        // Another role is not enough.
        expect_ok(&mut st, role_add("admin"), 1);
        expect_ok(&mut st, grant_role("root", "admin"), 1);
        expect_err(&mut st, AuthOp::Enable, AuthError::RootRoleNotExist);
        // etcd grants "root" even before the role exists.
        expect_ok(&mut st, grant_role("root", "root"), 1);
        assert!(st.role("root").is_none());
        // Enabling does not commit a revision in etcd.
        expect_ok(&mut st, AuthOp::Enable, 0);
        assert!(st.enabled());
        // Enabling again is fine and a no-op.
        expect_ok(&mut st, AuthOp::Enable, 0);
    }

    #[test]
    fn enable_twice_skips_the_root_checks() {
        // etcd returns before looking at root when already enabled.
        let mut st = enabled_store();
        st.users.remove("root");
        expect_ok(&mut st, AuthOp::Enable, 0);
    }

    #[test]
    fn disable_bumps_only_when_enabled() {
        let mut st = AuthStore::default();
        expect_ok(&mut st, AuthOp::Disable, 0);
        let mut st = enabled_store();
        expect_ok(&mut st, AuthOp::Disable, 1);
        assert!(!st.enabled());
        expect_ok(&mut st, AuthOp::Disable, 0);
    }

    #[test]
    fn user_add_and_its_errors() {
        let mut st = AuthStore::default();
        expect_err(&mut st, user_add("", "pw"), AuthError::UserEmpty);
        expect_ok(&mut st, user_add("alice", "pw"), 1);
        expect_err(
            &mut st,
            user_add("alice", "other"),
            AuthError::UserAlreadyExist,
        );
        let u = st.user("alice").unwrap();
        assert!(u.password_hash.starts_with("$2a$04$"));
        assert!(u.roles.is_empty());
        assert!(!u.no_password);
        // A no-password user keeps no hash, even if one was sent.
        expect_ok(
            &mut st,
            AuthOp::UserAdd {
                name: s("bob"),
                hash: s("$2a$04$whatever"),
                no_password: true,
            },
            1,
        );
        let b = st.user("bob").unwrap();
        assert_eq!(b.password_hash, "");
        assert!(b.no_password);
        assert_eq!(st.users(), vec![s("alice"), s("bob")]);
    }

    #[test]
    fn user_delete_and_root_protection() {
        let mut st = AuthStore::default();
        expect_err(
            &mut st,
            AuthOp::UserDelete { name: s("ghost") },
            AuthError::UserNotFound,
        );
        expect_ok(&mut st, user_add("alice", "pw"), 1);
        expect_ok(&mut st, AuthOp::UserDelete { name: s("alice") }, 1);
        assert!(st.user("alice").is_none());
        // Root may go while auth is disabled...
        expect_ok(&mut st, user_add("root", "pw"), 1);
        expect_ok(&mut st, AuthOp::UserDelete { name: s("root") }, 1);
        // ...not while it is enabled (checked before existence).
        let mut st = enabled_store();
        expect_err(
            &mut st,
            AuthOp::UserDelete { name: s("root") },
            AuthError::InvalidAuthMgmt,
        );
        expect_err(
            &mut st,
            AuthOp::UserDelete { name: s("ghost") },
            AuthError::UserNotFound,
        );
    }

    #[test]
    fn change_password_keeps_roles_and_options() {
        let mut st = enabled_store();
        expect_err(
            &mut st,
            AuthOp::UserChangePassword {
                name: s("ghost"),
                hash: hash_password("x", 4).unwrap(),
            },
            AuthError::UserNotFound,
        );
        expect_ok(
            &mut st,
            AuthOp::UserChangePassword {
                name: s("root"),
                hash: hash_password("newpw", 4).unwrap(),
            },
            1,
        );
        assert_eq!(st.user("root").unwrap().roles, vec![s("root")]);
        assert_eq!(st.verify_password("root", "newpw"), Ok(()));
        assert_eq!(
            st.verify_password("root", "rootpw"),
            Err(AuthError::AuthFailed)
        );
        // A no-password user gets the hash but still cannot log in.
        expect_ok(
            &mut st,
            AuthOp::UserAdd {
                name: s("np"),
                hash: String::new(),
                no_password: true,
            },
            1,
        );
        expect_ok(
            &mut st,
            AuthOp::UserChangePassword {
                name: s("np"),
                hash: hash_password("pw", 4).unwrap(),
            },
            1,
        );
        let np = st.user("np").unwrap();
        assert!(np.no_password);
        assert!(!np.password_hash.is_empty());
        assert_eq!(st.verify_password("np", "pw"), Err(AuthError::AuthFailed));
    }

    #[test]
    fn grant_role_and_its_errors() {
        let mut st = AuthStore::default();
        expect_err(&mut st, grant_role("ghost", "r"), AuthError::UserNotFound);
        expect_ok(&mut st, user_add("alice", "pw"), 1);
        expect_err(
            &mut st,
            grant_role("alice", "nope"),
            AuthError::RoleNotFound,
        );
        // User checked first.
        expect_err(
            &mut st,
            grant_role("ghost", "nope"),
            AuthError::UserNotFound,
        );
        for r in ["zeta", "beta", "alpha"] {
            expect_ok(&mut st, role_add(r), 1);
            expect_ok(&mut st, grant_role("alice", r), 1);
        }
        assert_eq!(
            st.user("alice").unwrap().roles,
            vec![s("alpha"), s("beta"), s("zeta")]
        );
        // Granting it again: success, no change, no new revision.
        let before = st.clone();
        expect_ok(&mut st, grant_role("alice", "beta"), 0);
        assert_eq!(st, before);
    }

    #[test]
    fn revoke_role_and_root_protection() {
        let mut st = AuthStore::default();
        expect_err(&mut st, revoke_role("ghost", "r"), AuthError::UserNotFound);
        apply_all(
            &mut st,
            &[user_add("alice", "pw"), role_add("r"), role_add("q")],
        );
        expect_err(
            &mut st,
            revoke_role("alice", "r"),
            AuthError::RoleNotGranted,
        );
        expect_err(
            &mut st,
            revoke_role("alice", "unknown"),
            AuthError::RoleNotGranted,
        );
        apply_all(
            &mut st,
            &[grant_role("alice", "r"), grant_role("alice", "q")],
        );
        expect_ok(&mut st, revoke_role("alice", "r"), 1);
        assert_eq!(st.user("alice").unwrap().roles, vec![s("q")]);

        let mut st = enabled_store();
        expect_err(
            &mut st,
            revoke_role("root", "root"),
            AuthError::InvalidAuthMgmt,
        );
        // Disabled, root may lose the root role.
        expect_ok(&mut st, AuthOp::Disable, 1);
        expect_ok(&mut st, revoke_role("root", "root"), 1);
        expect_err(&mut st, AuthOp::Enable, AuthError::RootRoleNotExist);
    }

    #[test]
    fn role_add_and_its_errors() {
        let mut st = AuthStore::default();
        expect_err(&mut st, role_add(""), AuthError::RoleEmpty);
        expect_ok(&mut st, role_add("r"), 1);
        expect_err(&mut st, role_add("r"), AuthError::RoleAlreadyExist);
        expect_ok(&mut st, role_add("root"), 1);
        assert_eq!(st.roles(), vec![s("r"), s("root")]);
        assert!(st.role("r").unwrap().perms.is_empty());
    }

    #[test]
    fn role_delete_removes_it_from_users() {
        let mut st = enabled_store();
        expect_err(
            &mut st,
            AuthOp::RoleDelete { role: s("ghost") },
            AuthError::RoleNotFound,
        );
        expect_err(
            &mut st,
            AuthOp::RoleDelete { role: s("root") },
            AuthError::InvalidAuthMgmt,
        );
        apply_all(
            &mut st,
            &[
                user_add("a", "pw"),
                user_add("b", "pw"),
                role_add("r"),
                role_add("q"),
                grant_role("a", "r"),
                grant_role("a", "q"),
                grant_role("b", "r"),
            ],
        );
        expect_ok(&mut st, AuthOp::RoleDelete { role: s("r") }, 1);
        assert!(st.role("r").is_none());
        assert_eq!(st.user("a").unwrap().roles, vec![s("q")]);
        assert!(st.user("b").unwrap().roles.is_empty());
        // Disabled, the root role may go too, and root loses it.
        expect_ok(&mut st, AuthOp::Disable, 1);
        expect_ok(&mut st, AuthOp::RoleDelete { role: s("root") }, 1);
        assert!(st.user("root").unwrap().roles.is_empty());
    }

    #[test]
    fn grant_permission_merges_and_sorts() {
        let mut st = AuthStore::default();
        // etcd 3.4 takes any range, empty and backwards ones too (found
        // side by side, compat auth_denials.txt); only the role counts.
        for (key, end) in [("", ""), ("", "z"), ("b", "a"), ("b", "b")] {
            expect_err(
                &mut st,
                grant_perm("ghost", perm(PermKind::Read, key, end)),
                AuthError::RoleNotFound,
            );
        }
        expect_err(
            &mut st,
            grant_perm("ghost", perm(PermKind::Read, "a", "")),
            AuthError::RoleNotFound,
        );
        expect_ok(&mut st, role_add("r"), 1);
        expect_ok(&mut st, grant_perm("r", perm(PermKind::Read, "m", "")), 1);
        expect_ok(&mut st, grant_perm("r", perm(PermKind::Write, "c", "d")), 1);
        expect_ok(&mut st, grant_perm("r", perm(PermKind::Read, "c", "")), 1);
        expect_ok(&mut st, grant_perm("r", perm(PermKind::Read, "x", "\0")), 1);
        expect_ok(
            &mut st,
            grant_perm("r", perm(PermKind::Read, "\0", "\0")),
            1,
        );
        let perms = &st.role("r").unwrap().perms;
        assert_eq!(
            perms,
            // Sorted by key; the two of key "c" in the order granted.
            &vec![
                perm(PermKind::Read, "\0", "\0"),
                perm(PermKind::Write, "c", "d"),
                perm(PermKind::Read, "c", ""),
                perm(PermKind::Read, "m", ""),
                perm(PermKind::Read, "x", "\0"),
            ]
        );
        // Same (key, range_end): the kind is replaced, and etcd still
        // commits a revision (even when the kind is the same).
        expect_ok(
            &mut st,
            grant_perm("r", perm(PermKind::ReadWrite, "c", "d")),
            1,
        );
        expect_ok(
            &mut st,
            grant_perm("r", perm(PermKind::ReadWrite, "c", "d")),
            1,
        );
        let perms = &st.role("r").unwrap().perms;
        assert_eq!(perms.len(), 5);
        assert_eq!(perms[1], perm(PermKind::ReadWrite, "c", "d"));
        assert_eq!(perms[2], perm(PermKind::Read, "c", ""));
        // etcd looks only at the first permission of a key: granting the
        // second one's range again appends a duplicate (as etcd 3.4 does).
        expect_ok(&mut st, grant_perm("r", perm(PermKind::Write, "c", "")), 1);
        let perms = &st.role("r").unwrap().perms;
        assert_eq!(perms.len(), 6);
        assert_eq!(perms[3], perm(PermKind::Write, "c", ""));
    }

    #[test]
    fn revoke_permission_and_its_errors() {
        let mut st = AuthStore::default();
        expect_err(
            &mut st,
            revoke_perm("ghost", "a", ""),
            AuthError::RoleNotFound,
        );
        apply_all(
            &mut st,
            &[
                role_add("r"),
                grant_perm("r", perm(PermKind::Read, "a", "")),
                grant_perm("r", perm(PermKind::Read, "a", "b")),
            ],
        );
        expect_err(
            &mut st,
            revoke_perm("r", "a", "c"),
            AuthError::PermissionNotGranted,
        );
        expect_err(
            &mut st,
            revoke_perm("r", "z", ""),
            AuthError::PermissionNotGranted,
        );
        expect_ok(&mut st, revoke_perm("r", "a", "b"), 1);
        assert_eq!(
            st.role("r").unwrap().perms,
            vec![perm(PermKind::Read, "a", "")]
        );
        expect_ok(&mut st, revoke_perm("r", "a", ""), 1);
        assert!(st.role("r").unwrap().perms.is_empty());
    }

    /// Enabled store with user `u` holding roles made of `perms`.
    fn store_with(perms: &[(&str, Permission)]) -> AuthStore {
        let mut st = enabled_store();
        apply_all(&mut st, &[user_add("u", "pw")]);
        for (role, p) in perms {
            if st.role(role).is_none() {
                apply_all(&mut st, &[role_add(role), grant_role("u", role)]);
            }
            apply_all(&mut st, &[grant_perm(role, p.clone())]);
        }
        st
    }

    fn read(st: &AuthStore, key: &str, end: &str) -> Result<(), AuthError> {
        st.permitted("u", key.as_bytes(), end.as_bytes(), false)
    }

    fn write(st: &AuthStore, key: &str, end: &str) -> Result<(), AuthError> {
        st.permitted("u", key.as_bytes(), end.as_bytes(), true)
    }

    const DENIED: Result<(), AuthError> = Err(AuthError::PermissionDenied);

    #[test]
    fn permitted_disabled_empty_unknown_and_root() {
        let mut st = AuthStore::default();
        assert_eq!(st.permitted("", b"k", b"", true), Ok(()));
        assert_eq!(st.permitted("ghost", b"k", b"", false), Ok(()));
        st = enabled_store();
        assert_eq!(
            st.permitted("", b"k", b"", false),
            Err(AuthError::UserEmpty)
        );
        assert_eq!(st.permitted("ghost", b"k", b"", false), DENIED);
        assert_eq!(st.permitted("root", b"\0", b"\0", true), Ok(()));
        // A user without roles may do nothing.
        apply_all(&mut st, &[user_add("u", "pw")]);
        assert_eq!(read(&st, "k", ""), DENIED);
        // The root role grants everything, whoever holds it.
        apply_all(&mut st, &[grant_role("u", "root")]);
        assert_eq!(write(&st, "\0", "\0"), Ok(()));
    }

    #[test]
    fn permitted_single_key() {
        let st = store_with(&[("r", perm(PermKind::Read, "foo", ""))]);
        assert_eq!(read(&st, "foo", ""), Ok(()));
        assert_eq!(write(&st, "foo", ""), DENIED);
        assert_eq!(read(&st, "fo", ""), DENIED);
        assert_eq!(read(&st, "foo0", ""), DENIED);
        // The key alone as a range: [foo, foo\0).
        assert_eq!(read(&st, "foo", "foo\0"), Ok(()));
        assert_eq!(read(&st, "foo", "foo0"), DENIED);
        // From the key on: not covered.
        assert_eq!(read(&st, "foo", "\0"), DENIED);
    }

    #[test]
    fn permitted_prefix() {
        let st = store_with(&[("r", perm(PermKind::Write, "foo/", "foo0"))]);
        assert_eq!(write(&st, "foo/", ""), Ok(()));
        assert_eq!(write(&st, "foo/bar", ""), Ok(()));
        assert_eq!(write(&st, "foo/", "foo0"), Ok(()));
        assert_eq!(write(&st, "foo/a", "foo/b"), Ok(()));
        assert_eq!(write(&st, "foo0", ""), DENIED);
        assert_eq!(write(&st, "foo", ""), DENIED);
        assert_eq!(read(&st, "foo/bar", ""), DENIED);
        // Partly covered ranges.
        assert_eq!(write(&st, "foo", "foo0"), DENIED);
        assert_eq!(write(&st, "foo/", "foo1"), DENIED);
        assert_eq!(write(&st, "foo/", "\0"), DENIED);
    }

    #[test]
    fn permitted_from_key() {
        let st = store_with(&[("r", perm(PermKind::ReadWrite, "m", "\0"))]);
        for check in [read, write] {
            assert_eq!(check(&st, "m", ""), Ok(()));
            assert_eq!(check(&st, "zzzz", ""), Ok(()));
            assert_eq!(check(&st, "m", "\0"), Ok(()));
            assert_eq!(check(&st, "n", "\0"), Ok(()));
            assert_eq!(check(&st, "m", "z"), Ok(()));
            assert_eq!(check(&st, "l", ""), DENIED);
            assert_eq!(check(&st, "l", "n"), DENIED);
            assert_eq!(check(&st, "\0", "\0"), DENIED);
        }
        // Everything.
        let st = store_with(&[("r", perm(PermKind::Read, "\0", "\0"))]);
        assert_eq!(read(&st, "\0", "\0"), Ok(()));
        assert_eq!(read(&st, "a", "b"), Ok(()));
        assert_eq!(write(&st, "a", ""), DENIED);
    }

    #[test]
    fn permitted_union_of_two_roles() {
        let st = store_with(&[
            ("r1", perm(PermKind::Read, "a", "c")),
            ("r2", perm(PermKind::ReadWrite, "b", "e")),
        ]);
        assert_eq!(read(&st, "a", "e"), Ok(()));
        assert_eq!(read(&st, "a", "d"), Ok(()));
        assert_eq!(read(&st, "a", "f"), DENIED);
        assert_eq!(write(&st, "a", "e"), DENIED);
        assert_eq!(write(&st, "b", "e"), Ok(()));
        // Adjacent intervals are contiguous; a gap is not.
        let st = store_with(&[
            ("r1", perm(PermKind::Read, "a", "c")),
            ("r2", perm(PermKind::Read, "c", "e")),
            ("r2", perm(PermKind::Read, "f", "\0")),
        ]);
        assert_eq!(read(&st, "a", "e"), Ok(()));
        assert_eq!(read(&st, "a", "f"), DENIED);
        assert_eq!(read(&st, "e", ""), DENIED);
        assert_eq!(read(&st, "f", "\0"), Ok(()));
        assert_eq!(read(&st, "a", "\0"), DENIED);
        // A point permission fills a one-key gap: [c, c\0).
        let st = store_with(&[
            ("r1", perm(PermKind::Read, "a", "c")),
            ("r2", perm(PermKind::Read, "c", "")),
            ("r2", perm(PermKind::Read, "c\0", "e")),
        ]);
        assert_eq!(read(&st, "a", "e"), Ok(()));
        // Removing a role narrows what is permitted.
        let mut st = st;
        apply_all(&mut st, &[revoke_role("u", "r2")]);
        assert_eq!(read(&st, "a", "e"), DENIED);
        assert_eq!(read(&st, "a", "c"), Ok(()));
    }

    #[test]
    fn admin_needs_the_root_role() {
        let mut st = AuthStore::default();
        assert_eq!(st.admin(""), Ok(()));
        assert_eq!(st.admin("ghost"), Ok(()));
        st = enabled_store();
        apply_all(&mut st, &[user_add("u", "pw")]);
        assert_eq!(st.admin(""), Err(AuthError::UserEmpty));
        assert_eq!(st.admin("ghost"), Err(AuthError::UserNotFound));
        assert_eq!(st.admin("u"), Err(AuthError::PermissionDenied));
        assert_eq!(st.admin("root"), Ok(()));
    }

    #[test]
    fn verify_password_cases() {
        let mut st = enabled_store();
        apply_all(
            &mut st,
            &[AuthOp::UserAdd {
                name: s("np"),
                hash: String::new(),
                no_password: true,
            }],
        );
        assert_eq!(st.verify_password("root", "rootpw"), Ok(()));
        assert_eq!(
            st.verify_password("root", "wrong"),
            Err(AuthError::AuthFailed)
        );
        assert_eq!(st.verify_password("root", ""), Err(AuthError::AuthFailed));
        assert_eq!(
            st.verify_password("ghost", "rootpw"),
            Err(AuthError::AuthFailed)
        );
        assert_eq!(st.verify_password("np", ""), Err(AuthError::AuthFailed));
        assert_eq!(st.verify_password("np", "x"), Err(AuthError::AuthFailed));
        // A hash that is no bcrypt hash never matches.
        st.users.get_mut("root").unwrap().password_hash = s("garbage");
        assert_eq!(
            st.verify_password("root", "rootpw"),
            Err(AuthError::AuthFailed)
        );
        apply_all(&mut st, &[AuthOp::Disable]);
        assert_eq!(
            st.verify_password("root", "rootpw"),
            Err(AuthError::AuthNotEnabled)
        );
    }

    #[test]
    fn hash_password_costs_and_lengths() {
        assert!(hash_password("pw", 3).is_err());
        assert!(hash_password("pw", 32).is_err());
        let h = hash_password("pw", 4).unwrap();
        assert!(h.starts_with("$2a$04$"), "{h}");
        assert_eq!(h.len(), 60);
        assert!(bcrypt::verify("pw", &h).unwrap());
        // Salted: two hashes of one password differ.
        assert_ne!(h, hash_password("pw", 4).unwrap());
        assert!(hash_password(&"x".repeat(72), 4).is_ok());
        assert!(hash_password(&"x".repeat(73), 4).is_err());
        // A standard `$2a$` vector (the form Go's bcrypt writes) verifies.
        let mut st = AuthStore::default();
        apply_all(
            &mut st,
            &[
                AuthOp::UserAdd {
                    name: s("root"),
                    hash: s("$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"),
                    no_password: false,
                },
                grant_role("root", "root"),
                AuthOp::Enable,
            ],
        );
        assert_eq!(st.verify_password("root", "U*U"), Ok(()));
        assert_eq!(
            st.verify_password("root", "U*V"),
            Err(AuthError::AuthFailed)
        );
    }

    #[test]
    fn errors_round_trip_as_text() {
        for e in ALL_ERRORS {
            let msg = e.to_string();
            assert_eq!(AuthError::from_message(&msg), Some(e.clone()), "{msg}");
        }
        assert_eq!(
            AuthError::AuthFailed.to_string(),
            "etcdserver: authentication failed, invalid user ID or password"
        );
        assert_eq!(
            AuthError::AuthOldRevision.to_string(),
            "etcdserver: revision of auth store is old"
        );
        assert_eq!(AuthError::from_message("etcdserver: nope"), None);
        assert_eq!(AuthError::from_message(""), None);
        // Every message is distinct.
        let mut msgs: Vec<String> = ALL_ERRORS.iter().map(|e| e.to_string()).collect();
        msgs.sort();
        msgs.dedup();
        assert_eq!(msgs.len(), ALL_ERRORS.len());
    }

    fn all_ops() -> Vec<AuthOp> {
        vec![
            AuthOp::Enable,
            AuthOp::Disable,
            AuthOp::UserAdd {
                name: s("alice"),
                hash: s("$2a$04$abc"),
                no_password: false,
            },
            AuthOp::UserAdd {
                name: s("ünï"),
                hash: String::new(),
                no_password: true,
            },
            AuthOp::UserDelete { name: s("alice") },
            AuthOp::UserChangePassword {
                name: s("alice"),
                hash: s("$2a$04$def"),
            },
            grant_role("alice", "r"),
            revoke_role("alice", "r"),
            role_add("r"),
            role_add(""),
            AuthOp::RoleDelete { role: s("r") },
            grant_perm("r", perm(PermKind::Read, "a", "")),
            grant_perm("r", perm(PermKind::Write, "a", "b")),
            grant_perm("r", perm(PermKind::ReadWrite, "\0", "\0")),
            AuthOp::RoleRevokePermission {
                role: s("r"),
                key: vec![0xff, 0],
                range_end: vec![0xff, 1],
            },
        ]
    }

    fn rich_store() -> AuthStore {
        let mut st = enabled_store();
        apply_all(
            &mut st,
            &[
                user_add("alice", "pw"),
                AuthOp::UserAdd {
                    name: s("bob"),
                    hash: String::new(),
                    no_password: true,
                },
                role_add("r1"),
                role_add("r2"),
                grant_perm("r1", perm(PermKind::Read, "a", "")),
                grant_perm("r1", perm(PermKind::Write, "a", "b")),
                grant_perm("r2", perm(PermKind::ReadWrite, "x", "\0")),
                grant_role("alice", "r1"),
                grant_role("alice", "r2"),
                grant_role("bob", "r2"),
            ],
        );
        st
    }

    /// A small deterministic generator for the garbage tests.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn ops_round_trip_and_refuse_garbage() {
        for op in all_ops() {
            let enc = op.encode();
            assert_eq!(AuthOp::decode(&enc), Ok(op.clone()));
            for cut in 0..enc.len() {
                assert!(AuthOp::decode(&enc[..cut]).is_err(), "{op:?} cut {cut}");
            }
            let mut long = enc.clone();
            long.push(0);
            assert!(AuthOp::decode(&long).is_err());
            // Flipping any byte never panics.
            for i in 0..enc.len() {
                let mut bad = enc.clone();
                bad[i] ^= 0xff;
                let _ = AuthOp::decode(&bad);
            }
        }
        assert!(AuthOp::decode(&[FORMAT_VERSION, 99]).is_err());
        assert!(AuthOp::decode(&[2, OP_ENABLE]).is_err());
        // A bad permission type.
        let mut enc = grant_perm("r", perm(PermKind::Read, "a", "")).encode();
        let kind_at = 2 + 4 + 1;
        assert_eq!(enc[kind_at], 0);
        enc[kind_at] = 3;
        assert!(AuthOp::decode(&enc).is_err());
        // Not UTF-8.
        let mut enc = role_add("ab").encode();
        let last = enc.len() - 1;
        enc[last] = 0xff;
        assert!(AuthOp::decode(&enc).is_err());
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let len = (xorshift(&mut state) % 40) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| xorshift(&mut state) as u8).collect();
            if len > 1 && xorshift(&mut state) & 1 == 0 {
                // Often well-formed heads, to get past the first checks.
                b[0] = FORMAT_VERSION;
                b[1] = (b[1] % 12) + 1;
            }
            let _ = AuthOp::decode(&b);
        }
    }

    #[test]
    fn store_round_trips_and_refuses_garbage() {
        for st in [AuthStore::default(), enabled_store(), rich_store()] {
            let enc = st.encode();
            assert_eq!(AuthStore::decode(&enc), Ok(st.clone()));
            for cut in 0..enc.len() {
                assert!(AuthStore::decode(&enc[..cut]).is_err(), "cut {cut}");
            }
            let mut long = enc.clone();
            long.push(0);
            assert!(AuthStore::decode(&long).is_err());
            for i in 0..enc.len() {
                let mut bad = enc.clone();
                bad[i] ^= 0xff;
                let _ = AuthStore::decode(&bad);
                bad[i] ^= 0x7e;
                let _ = AuthStore::decode(&bad);
            }
        }
        let mut state = 0x0123_4567_89ab_cdef;
        for _ in 0..20_000 {
            let len = (xorshift(&mut state) % 64) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| xorshift(&mut state) as u8).collect();
            if len > 0 {
                b[0] = FORMAT_VERSION;
            }
            let _ = AuthStore::decode(&b);
        }
        // A huge count with nothing behind it fails fast.
        let mut b = vec![FORMAT_VERSION, 0];
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(AuthStore::decode(&b).is_err());
    }

    #[test]
    fn store_decode_refuses_broken_invariants() {
        // Roles of a user out of order.
        let mut st = rich_store();
        st.users.get_mut("alice").unwrap().roles.reverse();
        assert!(AuthStore::decode(&st.encode()).is_err());
        // Duplicate role of a user.
        let mut st = rich_store();
        st.users.get_mut("bob").unwrap().roles.push(s("r2"));
        assert!(AuthStore::decode(&st.encode()).is_err());
        // Permissions out of key order.
        let mut st = rich_store();
        st.roles.get_mut("r1").unwrap().perms[0].key = b"b".to_vec();
        assert!(AuthStore::decode(&st.encode()).is_err());
        // A backwards permission range is a state etcd 3.4 can reach: kept.
        let mut st = rich_store();
        st.roles.get_mut("r2").unwrap().perms[0].range_end = b"a".to_vec();
        assert_eq!(AuthStore::decode(&st.encode()), Ok(st));
        // A bad flag byte.
        let mut enc = rich_store().encode();
        enc[1] = 2;
        assert!(AuthStore::decode(&enc).is_err());
    }

    #[test]
    fn apply_is_deterministic() {
        let ops: Vec<AuthOp> = [
            vec![
                AuthOp::UserAdd {
                    name: s("root"),
                    hash: s("h"),
                    no_password: false,
                },
                grant_role("root", "root"),
                AuthOp::Enable,
            ],
            all_ops(),
            all_ops(),
        ]
        .concat();
        let run = || {
            let mut st = AuthStore::default();
            let results: Vec<_> = ops.iter().map(|op| st.apply(op)).collect();
            (st, results)
        };
        let (a, ra) = run();
        let (b, rb) = run();
        assert_eq!(a, b);
        assert_eq!(ra, rb);
        assert_eq!(AuthStore::decode(&a.encode()), Ok(a));
    }

    #[test]
    fn check_never_changes_the_store() {
        let st = rich_store();
        for op in all_ops() {
            let before = st.clone();
            let checked = st.check(&op);
            assert_eq!(st, before);
            let mut applied = st.clone();
            assert_eq!(applied.apply(&op), checked, "{op:?}");
        }
    }
}
