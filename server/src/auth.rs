//! The Auth service and the permission checks every other call makes, as
//! etcd 3.4 makes them (`etcdserver/apply_auth.go`, `v3_server.go`,
//! `api/v3rpc/maintenance.go` and `watch.go`). The auth store itself is
//! shard 0's (`ferrokv_shards::auth_view`); this module decides who a
//! request runs as and whether it may, and hashes passwords before any of
//! them reaches a log.

use bytes::Bytes;
use ferrokv_shards::auth::{self, AuthError, AuthOp, AuthStore, PermKind, Permission};
use ferrokv_shards::auth_view::{AuthInfo, AuthRecord};
use ferrokv_wire::conn::Caller;
use ferrokv_wire::grpc::{decode, Status};
use ferrokv_wire::pb::{authpb, etcdserverpb as pb};
use ferrokv_wire::Message;

use crate::errors;
use crate::service::Service;

fn refused(e: AuthError) -> Status {
    errors::engine(ferrokv_shards::Error::Auth(e))
}

/// Who `caller` is on this member (etcd's `AuthInfoFromCtx`): None with
/// auth disabled. A JWT names its user and the auth revision it was made
/// at; a simple token is looked up.
pub fn info(svc: &Service, caller: &Caller) -> Result<Option<AuthInfo>, Status> {
    match (&svc.jwt, caller.token.as_deref()) {
        (Some(jwt), Some(token)) => {
            let (user, revision) = jwt
                .verify(token)
                .ok_or_else(|| refused(AuthError::InvalidAuthToken))?;
            let enabled = svc.engine.auth().current().enabled();
            Ok(enabled.then_some(AuthInfo { user, revision }))
        }
        // etcd's `AuthInfoFromTLS`: with no token, a verified client
        // certificate's common name is the user.
        (_, None) if caller.common_name.is_some() => {
            let store = svc.engine.auth().current();
            Ok(store.enabled().then(|| AuthInfo {
                user: caller.common_name.clone().unwrap_or_default(),
                revision: store.revision(),
            }))
        }
        (_, token) => svc.engine.auth().info(token).map_err(refused),
    }
}

/// A check of `info` against the member's current store (nothing to check
/// with auth disabled).
fn with_store(
    svc: &Service,
    info: &Option<AuthInfo>,
    check: impl FnOnce(&AuthStore, &str) -> Result<(), AuthError>,
) -> Result<(), Status> {
    let Some(info) = info else { return Ok(()) };
    let store = svc.engine.auth().current();
    check(&store, &info.user).map_err(refused)
}

/// A permission check (etcd's `isOpPermitted`): refused with `revision of
/// auth store is old` when the auth store moved past the revision the
/// caller was identified at (a JWT's claim, or the store's when a simple
/// token was looked up before an await), as etcd refuses it.
fn permitted_by(
    svc: &Service,
    info: &Option<AuthInfo>,
    check: impl FnOnce(&AuthStore, &str) -> Result<(), AuthError>,
) -> Result<(), Status> {
    with_store(svc, info, |s, u| {
        if info.as_ref().is_some_and(|i| i.revision < s.revision()) {
            return Err(AuthError::AuthOldRevision);
        }
        check(s, u)
    })
}

/// The maintenance calls etcd 3.4 keeps for root (Defragment, Hash,
/// HashKV, Snapshot): its `authMaintenanceServer` returns the auth
/// package's own error, unmapped, so clients see code Unknown and the
/// `auth:` text.
pub fn maintenance_admin(svc: &Service, caller: &Caller) -> Result<(), Status> {
    let info = raw_info(svc, caller)?;
    let store = svc.engine.auth().current();
    match info {
        Some(i) if store.enabled() => store.admin(&i.user).map_err(raw),
        _ => Ok(()),
    }
}

/// An auth error as etcd's maintenance server returns it: the auth
/// package's own text, unmapped (code Unknown).
fn raw(e: AuthError) -> Status {
    let text = match e {
        AuthError::UserNotFound => "auth: user not found".to_string(),
        AuthError::AuthOldRevision => "auth: revision in header is old".to_string(),
        other => other.to_string().replacen("etcdserver: ", "auth: ", 1),
    };
    Status::new(ferrokv_wire::grpc::Code::Unknown, text)
}

/// Who a maintenance call runs as, its errors unmapped as etcd 3.4's
/// maintenance server returns them: an unknown or expired token is
/// `auth: invalid auth token` (Unknown). Alarm uses it alone: etcd's
/// Alarm is a raft request, whose `AuthInfoFromCtx` refuses a bad token
/// but checks no permission.
pub fn raw_info(svc: &Service, caller: &Caller) -> Result<Option<AuthInfo>, Status> {
    Ok(match (&svc.jwt, caller.token.as_deref()) {
        (Some(jwt), Some(token)) => match jwt.verify(token) {
            Some((user, revision)) => Some(AuthInfo { user, revision }),
            None => return Err(raw(AuthError::InvalidAuthToken)),
        },
        _ => info(svc, caller).map_err(|s| AuthError::from_message(&s.message).map_or(s, raw))?,
    })
}

/// etcd's `IsAdminPermitted`: the caller holds the root role.
pub fn admin(svc: &Service, info: &Option<AuthInfo>) -> Result<(), Status> {
    with_store(svc, info, |s, u| s.admin(u))
}

/// Read permission over [key, range_end).
pub fn read(
    svc: &Service,
    info: &Option<AuthInfo>,
    key: &[u8],
    range_end: &[u8],
) -> Result<(), Status> {
    permitted_by(svc, info, |s, u| s.permitted(u, key, range_end, false))
}

fn txn_ops(s: &AuthStore, u: &str, ops: &[pb::RequestOp]) -> Result<(), AuthError> {
    use pb::request_op::Request as R;
    for op in ops {
        match &op.request {
            Some(R::RequestRange(r)) => s.permitted(u, &r.key, &r.range_end, false)?,
            Some(R::RequestPut(p)) => put(s, u, p)?,
            Some(R::RequestDeleteRange(d)) => delete(s, u, d)?,
            // etcd 3.5 checks nested txns the same way (3.4 skipped them).
            Some(R::RequestTxn(t)) => txn(s, u, t)?,
            None => {}
        }
    }
    Ok(())
}

fn put(s: &AuthStore, u: &str, p: &pb::PutRequest) -> Result<(), AuthError> {
    s.permitted(u, &p.key, &[], true)?;
    if p.prev_kv {
        s.permitted(u, &p.key, &[], false)?;
    }
    Ok(())
}

fn delete(s: &AuthStore, u: &str, d: &pb::DeleteRangeRequest) -> Result<(), AuthError> {
    if d.prev_kv {
        s.permitted(u, &d.key, &d.range_end, false)?;
    }
    s.permitted(u, &d.key, &d.range_end, true)
}

fn txn(s: &AuthStore, u: &str, t: &pb::TxnRequest) -> Result<(), AuthError> {
    for c in &t.compare {
        s.permitted(u, &c.key, &c.range_end, false)?;
    }
    txn_ops(s, u, &t.success)?;
    txn_ops(s, u, &t.failure)
}

/// A Put's permissions: write on its key, read with prev_kv, and write on
/// every key already attached to its lease (etcd's `checkLeasePuts`: a
/// user who could not revoke the lease may not attach keys to it).
pub async fn check_put(
    svc: &Service,
    info: &Option<AuthInfo>,
    p: &pb::PutRequest,
) -> Result<(), Status> {
    permitted_by(svc, info, |s, u| put(s, u, p))?;
    if p.lease != 0 {
        check_lease_keys(svc, info, p.lease).await?;
    }
    Ok(())
}

pub fn check_delete(
    svc: &Service,
    info: &Option<AuthInfo>,
    d: &pb::DeleteRangeRequest,
) -> Result<(), Status> {
    permitted_by(svc, info, |s, u| delete(s, u, d))
}

/// Every compare and every op of both branches, nested txns included.
/// Leases of puts inside a txn are not looked at (nor are they by etcd).
pub fn check_txn(svc: &Service, info: &Option<AuthInfo>, t: &pb::TxnRequest) -> Result<(), Status> {
    permitted_by(svc, info, |s, u| txn(s, u, t))
}

/// Write permission on every key attached to lease `id` (etcd's
/// `checkLeasePuts`: LeaseRevoke, and a Put attaching a key to the lease).
pub async fn check_lease_keys(
    svc: &Service,
    info: &Option<AuthInfo>,
    id: i64,
) -> Result<(), Status> {
    if info.is_none() {
        return Ok(());
    }
    let keys = match svc.engine.lease_time_to_live(id, true).await {
        Ok(Some((_, _, keys))) => keys,
        // No such lease: the call itself answers that.
        Ok(None) | Err(_) => return Ok(()),
    };
    permitted_by(svc, info, |s, u| {
        keys.iter().try_for_each(|k| s.permitted(u, k, &[], true))
    })
}

fn perm_kind(t: i32) -> Result<PermKind, Status> {
    match authpb::permission::Type::try_from(t) {
        Ok(authpb::permission::Type::Read) => Ok(PermKind::Read),
        Ok(authpb::permission::Type::Write) => Ok(PermKind::Write),
        Ok(authpb::permission::Type::Readwrite) => Ok(PermKind::ReadWrite),
        Err(_) => Err(Status::new(
            ferrokv_wire::grpc::Code::InvalidArgument,
            format!("etcdserver: invalid permission type {t}"),
        )),
    }
}

fn perm_type(k: &PermKind) -> i32 {
    match k {
        PermKind::Read => authpb::permission::Type::Read as i32,
        PermKind::Write => authpb::permission::Type::Write as i32,
        PermKind::ReadWrite => authpb::permission::Type::Readwrite as i32,
    }
}

/// bcrypt runs for tens of milliseconds: off the core, on glommio's
/// blocking pool, so a core keeps serving meanwhile.
async fn hashed(password: String, cost: u32) -> Result<String, Status> {
    glommio::executor()
        .spawn_blocking(move || auth::hash_password(&password, cost))
        .await
        .map_err(|e| Status::new(ferrokv_wire::grpc::Code::Internal, e))
}

/// etcd's simple token: 16 random letters, a dot, and a sequence number
/// that keeps tokens of one member apart.
fn new_token() -> Result<String, Status> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(1);
    let mut raw = [0u8; 16];
    getrandom::getrandom(&mut raw).map_err(|e| {
        Status::new(
            ferrokv_wire::grpc::Code::Internal,
            format!("etcdserver: no randomness for a token: {e}"),
        )
    })?;
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let prefix: String = raw
        .iter()
        .map(|b| LETTERS[*b as usize % LETTERS.len()] as char)
        .collect();
    Ok(format!("{prefix}.{}", SEQ.fetch_add(1, Ordering::Relaxed)))
}

/// How many times Authenticate retries when the auth store changed between
/// its password check and its token's commit (etcd retries until stable).
const AUTHENTICATE_TRIES_MAX: usize = 5;

async fn authenticate(svc: &Service, r: pb::AuthenticateRequest) -> Result<String, Status> {
    if svc.jwt.is_some() {
        // etcd reads after a ReadIndex: the store checked is current.
        svc.engine.read_barrier().await.map_err(errors::engine)?;
    }
    for _ in 0..AUTHENTICATE_TRIES_MAX {
        let store = svc.engine.auth().current();
        if !store.enabled() {
            return Err(refused(AuthError::AuthNotEnabled));
        }
        let checked = store.revision();
        let (name, password) = (r.name.clone(), r.password.clone());
        let verdict = glommio::executor()
            .spawn_blocking(move || store.verify_password(&name, &password))
            .await;
        if let Err(e) = verdict {
            log::warn!("invalid authentication was requested for user {:?}", r.name);
            return Err(refused(e));
        }
        if let Some(jwt) = &svc.jwt {
            // Any member verifies it: nothing to commit.
            return jwt
                .sign(&r.name, checked)
                .map_err(|e| Status::new(ferrokv_wire::grpc::Code::FailedPrecondition, e));
        }
        let token = new_token()?;
        let rec = AuthRecord::Token {
            name: r.name.clone(),
            token: token.clone(),
        };
        svc.engine.auth_change(rec).await.map_err(errors::engine)?;
        if svc.engine.auth().revision() == checked {
            return Ok(token);
        }
    }
    Err(errors::engine(ferrokv_shards::Error::Timeout))
}

/// One Auth service call; None for a method of another service.
pub async fn call(
    svc: &Service,
    method: &str,
    caller: &Caller,
    msg: Bytes,
) -> Option<Result<Bytes, Status>> {
    let name = method.strip_prefix("/etcdserverpb.Auth/")?;
    Some(serve(svc, name, caller, msg).await)
}

fn encode<M: Message>(m: &M) -> Bytes {
    Bytes::from(m.encode_to_vec())
}

async fn serve(svc: &Service, name: &str, caller: &Caller, msg: Bytes) -> Result<Bytes, Status> {
    if name == "Authenticate" {
        let r: pb::AuthenticateRequest = decode(msg)?;
        let token = authenticate(svc, r).await?;
        let header = svc.header(svc.engine.sequencer().visible()).await;
        return Ok(encode(&pb::AuthenticateResponse { header, token }));
    }
    let info = info(svc, caller)?;
    let header = || async { svc.header(svc.engine.sequencer().visible()).await };
    let change = |op: AuthOp| async move {
        svc.engine
            .auth_change(AuthRecord::Change(op))
            .await
            .map_err(errors::engine)
    };
    let store = || svc.engine.auth().current();
    match name {
        "AuthStatus" => {
            let _: pb::AuthStatusRequest = decode(msg)?;
            let s = store();
            Ok(encode(&pb::AuthStatusResponse {
                header: header().await,
                enabled: s.enabled(),
                auth_revision: s.revision(),
            }))
        }
        "AuthEnable" => {
            let _: pb::AuthEnableRequest = decode(msg)?;
            admin(svc, &info)?;
            change(AuthOp::Enable).await?;
            Ok(encode(&pb::AuthEnableResponse {
                header: header().await,
            }))
        }
        "AuthDisable" => {
            let _: pb::AuthDisableRequest = decode(msg)?;
            admin(svc, &info)?;
            change(AuthOp::Disable).await?;
            Ok(encode(&pb::AuthDisableResponse {
                header: header().await,
            }))
        }
        "UserAdd" => {
            let r: pb::AuthUserAddRequest = decode(msg)?;
            admin(svc, &info)?;
            let no_password = r.options.is_some_and(|o| o.no_password);
            let probe = AuthOp::UserAdd {
                name: r.name.clone(),
                hash: String::new(),
                no_password,
            };
            // Refused before the (costly) hash when it would be anyway.
            store().check(&probe).map_err(refused)?;
            let hash = if no_password {
                String::new()
            } else {
                hashed(r.password, svc.bcrypt_cost).await?
            };
            change(AuthOp::UserAdd {
                name: r.name,
                hash,
                no_password,
            })
            .await?;
            Ok(encode(&pb::AuthUserAddResponse {
                header: header().await,
            }))
        }
        "UserGet" => {
            let r: pb::AuthUserGetRequest = decode(msg)?;
            // etcd: root, or the user itself.
            if info.as_ref().is_some_and(|i| i.user != r.name) {
                admin(svc, &info)?;
            }
            let s = store();
            let user = s
                .user(&r.name)
                .ok_or_else(|| refused(AuthError::UserNotFound))?;
            Ok(encode(&pb::AuthUserGetResponse {
                header: header().await,
                roles: user.roles.clone(),
            }))
        }
        "UserList" => {
            let _: pb::AuthUserListRequest = decode(msg)?;
            admin(svc, &info)?;
            Ok(encode(&pb::AuthUserListResponse {
                header: header().await,
                users: store().users(),
            }))
        }
        "UserDelete" => {
            let r: pb::AuthUserDeleteRequest = decode(msg)?;
            admin(svc, &info)?;
            change(AuthOp::UserDelete { name: r.name }).await?;
            Ok(encode(&pb::AuthUserDeleteResponse {
                header: header().await,
            }))
        }
        "UserChangePassword" => {
            let r: pb::AuthUserChangePasswordRequest = decode(msg)?;
            admin(svc, &info)?;
            let probe = AuthOp::UserChangePassword {
                name: r.name.clone(),
                hash: String::new(),
            };
            store().check(&probe).map_err(refused)?;
            let hash = hashed(r.password, svc.bcrypt_cost).await?;
            change(AuthOp::UserChangePassword { name: r.name, hash }).await?;
            Ok(encode(&pb::AuthUserChangePasswordResponse {
                header: header().await,
            }))
        }
        "UserGrantRole" => {
            let r: pb::AuthUserGrantRoleRequest = decode(msg)?;
            admin(svc, &info)?;
            change(AuthOp::UserGrantRole {
                user: r.user,
                role: r.role,
            })
            .await?;
            Ok(encode(&pb::AuthUserGrantRoleResponse {
                header: header().await,
            }))
        }
        "UserRevokeRole" => {
            let r: pb::AuthUserRevokeRoleRequest = decode(msg)?;
            admin(svc, &info)?;
            change(AuthOp::UserRevokeRole {
                name: r.name,
                role: r.role,
            })
            .await?;
            Ok(encode(&pb::AuthUserRevokeRoleResponse {
                header: header().await,
            }))
        }
        "RoleAdd" => {
            let r: pb::AuthRoleAddRequest = decode(msg)?;
            admin(svc, &info)?;
            change(AuthOp::RoleAdd { name: r.name }).await?;
            Ok(encode(&pb::AuthRoleAddResponse {
                header: header().await,
            }))
        }
        "RoleGet" => {
            let r: pb::AuthRoleGetRequest = decode(msg)?;
            let s = store();
            // etcd: root, or a user holding the role.
            let holds = info
                .as_ref()
                .and_then(|i| s.user(&i.user))
                .is_some_and(|u| u.roles.contains(&r.role));
            if !holds {
                admin(svc, &info)?;
            }
            let role = s
                .role(&r.role)
                .ok_or_else(|| refused(AuthError::RoleNotFound))?;
            Ok(encode(&pb::AuthRoleGetResponse {
                header: header().await,
                perm: role
                    .perms
                    .iter()
                    .map(|p| authpb::Permission {
                        perm_type: perm_type(&p.kind),
                        key: p.key.clone().into(),
                        range_end: p.range_end.clone().into(),
                    })
                    .collect(),
            }))
        }
        "RoleList" => {
            let _: pb::AuthRoleListRequest = decode(msg)?;
            admin(svc, &info)?;
            Ok(encode(&pb::AuthRoleListResponse {
                header: header().await,
                roles: store().roles(),
            }))
        }
        "RoleDelete" => {
            let r: pb::AuthRoleDeleteRequest = decode(msg)?;
            admin(svc, &info)?;
            change(AuthOp::RoleDelete { role: r.role }).await?;
            Ok(encode(&pb::AuthRoleDeleteResponse {
                header: header().await,
            }))
        }
        "RoleGrantPermission" => {
            let r: pb::AuthRoleGrantPermissionRequest = decode(msg)?;
            admin(svc, &info)?;
            let p = r.perm.unwrap_or_default();
            let perm = Permission {
                kind: perm_kind(p.perm_type)?,
                key: p.key.to_vec(),
                range_end: p.range_end.to_vec(),
            };
            change(AuthOp::RoleGrantPermission { name: r.name, perm }).await?;
            Ok(encode(&pb::AuthRoleGrantPermissionResponse {
                header: header().await,
            }))
        }
        "RoleRevokePermission" => {
            let r: pb::AuthRoleRevokePermissionRequest = decode(msg)?;
            admin(svc, &info)?;
            change(AuthOp::RoleRevokePermission {
                role: r.role,
                key: r.key.to_vec(),
                range_end: r.range_end.to_vec(),
            })
            .await?;
            Ok(encode(&pb::AuthRoleRevokePermissionResponse {
                header: header().await,
            }))
        }
        other => Err(errors::not_implemented(&format!(
            "/etcdserverpb.Auth/{other}"
        ))),
    }
}

/// Why a watch on [key, range_end) may not be created for `caller`, as
/// etcd words its cancel reason; None when it may.
pub fn watch_refusal(svc: &Service, caller: &Caller, c: &pb::WatchCreateRequest) -> Option<String> {
    let denied = match info(svc, caller) {
        Err(s) => return Some(s.message),
        Ok(info) => read(svc, &info, &c.key, &c.range_end).err()?,
    };
    // etcd keeps these three reasons and says "permission denied" for
    // any other refusal (an unknown user included).
    let kept = [
        AuthError::InvalidAuthToken,
        AuthError::AuthOldRevision,
        AuthError::UserEmpty,
    ];
    let denied = if kept.iter().any(|e| e.to_string() == denied.message) {
        denied
    } else {
        refused(AuthError::PermissionDenied)
    };
    // etcd's reason is its gRPC error's text (`rpctypes.ErrGRPC*.Error()`).
    Some(format!(
        "rpc error: code = {} desc = {}",
        denied.code.name(),
        denied.message
    ))
}

/// v3lock and v3election run as the caller (etcd's services call the
/// server through a client carrying the request's token): reading the
/// holders under `name/`, and, unless `read_only`, writing there.
pub fn check_prefix(
    svc: &Service,
    caller: &Caller,
    name: &[u8],
    read_only: bool,
) -> Result<(), Status> {
    let info = info(svc, caller)?;
    let key = crate::concurrency::candidates(name);
    let end = crate::concurrency::prefix_end(&key).to_vec();
    permitted_by(svc, &info, |s, u| {
        s.permitted(u, &key, &end, false)?;
        if read_only {
            Ok(())
        } else {
            s.permitted(u, &key, &end, true)
        }
    })
}
