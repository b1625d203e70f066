//! user, role and auth commands, printed as etcdctl prints them: a
//! sentence in the simple format, the response (header and lists) in json
//! and protobuf, the header (plus permissions or roles) in fields.

use bytes::Bytes;
use ferrokv_wire::pb::authpb::Permission;
use ferrokv_wire::pb::etcdserverpb::*;
use prost::Message;

use crate::client::Client;
use crate::ctx::{emit, Ctx};
use crate::error::CmdError;
use crate::gofmt::quote;
use crate::json::{self, Obj};
use crate::printer::Format;

use crate::client::path as rpc;

/// How a response without lists prints in each format.
fn print_plain<M: Message>(
    ctx: &Ctx,
    resp: &M,
    header: Option<&ResponseHeader>,
    simple: String,
) -> Result<(), CmdError> {
    emit(&ctx.printer.header_only(resp, header, simple)?)
}

/// A response that is a list of names (users, roles): `simple`, JSON with
/// the names under `field`, `fields` where etcdctl has that format, or
/// protobuf; etcdctl refuses the rest.
fn print_names<M: Message>(
    ctx: &Ctx,
    resp: &M,
    header: Option<&ResponseHeader>,
    field: &str,
    names: &[String],
    simple: String,
    fields: Option<String>,
) -> Result<(), CmdError> {
    match (ctx.printer.format, fields) {
        (Format::Simple, _) => emit(simple.as_bytes()),
        (Format::Json, _) => emit(
            format!(
                "{}\n",
                Obj::new()
                    .opt("header", header.map(json::header))
                    .list_omit(field, strings_json(names))
                    .build()
            )
            .as_bytes(),
        ),
        (Format::Fields, Some(text)) => emit(text.as_bytes()),
        (Format::Protobuf, _) => emit(&resp.encode_to_vec()),
        (f, _) => Err(unsupported(f)),
    }
}

fn fields_header(h: Option<&ResponseHeader>) -> String {
    let mut out = String::new();
    crate::printer::fields_header(&mut out, h);
    out
}

fn unsupported(format: Format) -> CmdError {
    let name = match format {
        Format::Fields => "fields",
        Format::Table => "table",
        _ => "this format",
    };
    CmdError::bad_feature(format!("{name} not supported as output format"))
}

fn strings_json(v: &[String]) -> Vec<String> {
    v.iter().map(|s| crate::gofmt::json_string(s)).collect()
}

pub async fn run(ctx: Ctx) -> Result<(), CmdError> {
    let args = ctx.inv.args.clone();
    let need = |ok: bool, msg: &str| {
        if ok {
            Ok(())
        } else {
            Err(CmdError::bad_args(msg))
        }
    };
    match ctx.inv.command.path {
        "auth enable" => {
            need(
                args.is_empty(),
                "auth enable command does not accept any arguments",
            )?;
            let client = ctx.client().await?;
            loop {
                match client
                    .unary::<_, AuthEnableResponse>(
                        rpc::AUTH_ENABLE,
                        AuthEnableRequest {},
                        ctx.command_timeout,
                    )
                    .await
                {
                    Ok(_) => break,
                    Err(e) if e.message() == "etcdserver: root user does not have root role" => {
                        crate::ctx::eprint_now(&format!(
                            "{}\n",
                            crate::error::retry_warning(&e, client.endpoint())
                        ));
                        // etcdctl creates the root role and grants it, then retries.
                        let _: AuthRoleAddResponse = ctx
                            .call(
                                &client,
                                rpc::ROLE_ADD,
                                AuthRoleAddRequest {
                                    name: "root".into(),
                                },
                            )
                            .await?;
                        let _: AuthUserGrantRoleResponse = ctx
                            .call(
                                &client,
                                rpc::USER_GRANT_ROLE,
                                AuthUserGrantRoleRequest {
                                    user: "root".into(),
                                    role: "root".into(),
                                },
                            )
                            .await?;
                    }
                    Err(e) => return Err(CmdError::rpc(&e, client.endpoint())),
                }
            }
            emit(b"Authentication Enabled\n")
        }
        "auth disable" => {
            need(
                args.is_empty(),
                "auth disable command does not accept any arguments",
            )?;
            let client = ctx.client().await?;
            let _: AuthDisableResponse = ctx
                .call(&client, rpc::AUTH_DISABLE, AuthDisableRequest {})
                .await?;
            emit(b"Authentication Disabled\n")
        }
        "user add" => {
            need(
                args.len() == 1,
                "user add command requires user name as its argument",
            )?;
            let from_flag = ctx.inv.string("new-user-password");
            let no_password = ctx.inv.bool("no-password");
            let (user, password) = if !from_flag.is_empty() {
                (args[0].clone(), from_flag)
            } else if let Some((u, p)) = args[0].split_once(':') {
                if u.is_empty() {
                    return Err(CmdError::bad_args("empty user name is not allowed"));
                }
                (u.to_string(), p.to_string())
            } else if no_password {
                (args[0].clone(), String::new())
            } else if ctx.inv.bool("interactive") {
                (args[0].clone(), crate::password::ask_new(&args[0])?)
            } else {
                (args[0].clone(), crate::password::first_word())
            };
            let client = ctx.client().await?;
            let req = AuthUserAddRequest {
                name: user.clone(),
                password,
                options: Some(ferrokv_wire::pb::authpb::UserAddOptions { no_password }),
            };
            let resp: AuthUserAddResponse = ctx.call(&client, rpc::USER_ADD, req).await?;
            print_plain(
                &ctx,
                &resp,
                resp.header.as_ref(),
                format!("User {user} created\n"),
            )
        }
        "user delete" => {
            need(
                args.len() == 1,
                "user delete command requires user name as its argument",
            )?;
            let client = ctx.client().await?;
            let resp: AuthUserDeleteResponse = ctx
                .call(
                    &client,
                    rpc::USER_DELETE,
                    AuthUserDeleteRequest {
                        name: args[0].clone(),
                    },
                )
                .await?;
            print_plain(
                &ctx,
                &resp,
                resp.header.as_ref(),
                format!("User {} deleted\n", args[0]),
            )
        }
        "user passwd" => {
            need(
                args.len() == 1,
                "user passwd command requires user name as its argument",
            )?;
            let password = if ctx.inv.bool("interactive") {
                crate::password::ask_new(&args[0])?
            } else {
                crate::password::first_word()
            };
            let client = ctx.client().await?;
            let req = AuthUserChangePasswordRequest {
                name: args[0].clone(),
                password,
            };
            let resp: AuthUserChangePasswordResponse =
                ctx.call(&client, rpc::USER_CHANGE_PASSWORD, req).await?;
            print_plain(
                &ctx,
                &resp,
                resp.header.as_ref(),
                "Password updated\n".into(),
            )
        }
        "user grant-role" => {
            need(
                args.len() == 2,
                "user grant command requires user name and role name as its argument",
            )?;
            let client = ctx.client().await?;
            let req = AuthUserGrantRoleRequest {
                user: args[0].clone(),
                role: args[1].clone(),
            };
            let resp: AuthUserGrantRoleResponse =
                ctx.call(&client, rpc::USER_GRANT_ROLE, req).await?;
            let simple = format!("Role {} is granted to user {}\n", args[1], args[0]);
            print_plain(&ctx, &resp, resp.header.as_ref(), simple)
        }
        "user revoke-role" => {
            need(
                args.len() == 2,
                "user revoke-role requires user name and role name as its argument",
            )?;
            let client = ctx.client().await?;
            let req = AuthUserRevokeRoleRequest {
                name: args[0].clone(),
                role: args[1].clone(),
            };
            let resp: AuthUserRevokeRoleResponse =
                ctx.call(&client, rpc::USER_REVOKE_ROLE, req).await?;
            let simple = format!("Role {} is revoked from user {}\n", args[1], args[0]);
            print_plain(&ctx, &resp, resp.header.as_ref(), simple)
        }
        "user list" => {
            need(args.is_empty(), "user list command requires no arguments")?;
            let client = ctx.client().await?;
            let resp: AuthUserListResponse = ctx
                .call(&client, rpc::USER_LIST, AuthUserListRequest {})
                .await?;
            let simple: String = resp.users.iter().map(|u| format!("{u}\n")).collect();
            print_names(
                &ctx,
                &resp,
                resp.header.as_ref(),
                "users",
                &resp.users,
                simple,
                None,
            )
        }
        "user get" => {
            need(
                args.len() == 1,
                "user get command requires user name as its argument",
            )?;
            let client = ctx.client().await?;
            let resp: AuthUserGetResponse = ctx
                .call(
                    &client,
                    rpc::USER_GET,
                    AuthUserGetRequest {
                        name: args[0].clone(),
                    },
                )
                .await?;
            if ctx.inv.bool("detail") {
                emit(format!("User: {}\n", args[0]).as_bytes())?;
                for role in &resp.roles {
                    emit(b"\n")?;
                    let r = role_get(&ctx, &client, role).await?;
                    print_role(&ctx, role, &r)?;
                }
                return Ok(());
            }
            let mut simple = format!("User: {}\nRoles:", args[0]);
            for r in &resp.roles {
                simple.push_str(&format!(" {r}"));
            }
            simple.push('\n');
            print_names(
                &ctx,
                &resp,
                resp.header.as_ref(),
                "roles",
                &resp.roles,
                simple,
                None,
            )
        }
        "role add" => {
            need(
                args.len() == 1,
                "role add command requires role name as its argument",
            )?;
            let client = ctx.client().await?;
            let resp: AuthRoleAddResponse = ctx
                .call(
                    &client,
                    rpc::ROLE_ADD,
                    AuthRoleAddRequest {
                        name: args[0].clone(),
                    },
                )
                .await?;
            print_plain(
                &ctx,
                &resp,
                resp.header.as_ref(),
                format!("Role {} created\n", args[0]),
            )
        }
        "role delete" => {
            need(
                args.len() == 1,
                "role delete command requires role name as its argument",
            )?;
            let client = ctx.client().await?;
            let resp: AuthRoleDeleteResponse = ctx
                .call(
                    &client,
                    rpc::ROLE_DELETE,
                    AuthRoleDeleteRequest {
                        role: args[0].clone(),
                    },
                )
                .await?;
            print_plain(
                &ctx,
                &resp,
                resp.header.as_ref(),
                format!("Role {} deleted\n", args[0]),
            )
        }
        "role get" => {
            need(
                args.len() == 1,
                "role get command requires role name as its argument",
            )?;
            let client = ctx.client().await?;
            let resp = role_get(&ctx, &client, &args[0]).await?;
            print_role(&ctx, &args[0], &resp)
        }
        "role list" => {
            need(args.is_empty(), "role list command requires no arguments")?;
            let client = ctx.client().await?;
            let resp: AuthRoleListResponse = ctx
                .call(&client, rpc::ROLE_LIST, AuthRoleListRequest {})
                .await?;
            let simple: String = resp.roles.iter().map(|r| format!("{r}\n")).collect();
            let mut fields = fields_header(resp.header.as_ref());
            fields.push_str("\"Roles\" :");
            for r in &resp.roles {
                fields.push_str(&format!(" {}", quote(r.as_bytes())));
            }
            fields.push('\n');
            print_names(
                &ctx,
                &resp,
                resp.header.as_ref(),
                "roles",
                &resp.roles,
                simple,
                Some(fields),
            )
        }
        "role grant-permission" => {
            need(
                args.len() >= 3,
                "role grant command requires role name, permission type, and key [endkey] as its argument",
            )?;
            let perm_type = match args[1].to_uppercase().as_str() {
                "READ" => 0,
                "WRITE" => 1,
                "READWRITE" => 2,
                _ => {
                    return Err(CmdError::bad_args(format!(
                        "invalid permission type: {}",
                        args[1]
                    )))
                }
            };
            let (key, range_end) = perm_range(&ctx, &args[2..])?;
            let client = ctx.client().await?;
            let req = AuthRoleGrantPermissionRequest {
                name: args[0].clone(),
                perm: Some(Permission {
                    perm_type,
                    key: Bytes::from(key),
                    range_end: Bytes::from(range_end),
                }),
            };
            let resp: AuthRoleGrantPermissionResponse =
                ctx.call(&client, rpc::ROLE_GRANT_PERMISSION, req).await?;
            print_plain(
                &ctx,
                &resp,
                resp.header.as_ref(),
                format!("Role {} updated\n", args[0]),
            )
        }
        "role revoke-permission" => {
            need(
                args.len() >= 2,
                "role revoke-permission command requires role name and key [endkey] as its argument",
            )?;
            let (key, range_end) = perm_range(&ctx, &args[1..])?;
            let client = ctx.client().await?;
            let req = AuthRoleRevokePermissionRequest {
                role: args[0].clone(),
                key: Bytes::from(key),
                range_end: Bytes::from(range_end.clone()),
            };
            let resp: AuthRoleRevokePermissionResponse =
                ctx.call(&client, rpc::ROLE_REVOKE_PERMISSION, req).await?;
            let end = String::from_utf8_lossy(&range_end).into_owned();
            let simple = if end.is_empty() {
                format!(
                    "Permission of key {} is revoked from role {}\n",
                    args[1], args[0]
                )
            } else if end != "\0" {
                format!(
                    "Permission of range [{}, {end}) is revoked from role {}\n",
                    args[1], args[0]
                )
            } else {
                format!(
                    "Permission of range [{}, <open ended> is revoked from role {}\n",
                    args[1], args[0]
                )
            };
            print_plain(&ctx, &resp, resp.header.as_ref(), simple)
        }
        other => Err(CmdError::bad_feature(format!(
            "{other}: not supported by ferroctl yet"
        ))),
    }
}

async fn role_get(ctx: &Ctx, client: &Client, role: &str) -> Result<AuthRoleGetResponse, CmdError> {
    ctx.call(
        client,
        rpc::ROLE_GET,
        AuthRoleGetRequest {
            role: role.to_string(),
        },
    )
    .await
}

/// etcdctl's `permRange`: the key and range end a permission covers.
fn perm_range(ctx: &Ctx, args: &[String]) -> Result<(Vec<u8>, Vec<u8>), CmdError> {
    let prefix = ctx.inv.bool("prefix");
    let from_key = ctx.inv.bool("from-key");
    let key = crate::cli::arg_bytes(&args[0]);
    if key.is_empty() {
        if prefix && from_key {
            return Err(CmdError::bad_args(
                "--from-key and --prefix flags are mutually exclusive",
            ));
        }
        // The empty key stands for the whole keyspace: ["\0", end).
        let end = if prefix || from_key {
            vec![0]
        } else {
            Vec::new()
        };
        return Ok((vec![0], end));
    }
    let end = if args.len() == 1 {
        match (prefix, from_key) {
            (true, true) => {
                return Err(CmdError::bad_args(
                    "--from-key and --prefix flags are mutually exclusive",
                ))
            }
            (true, false) => super::kv::prefix_end(&key),
            (false, true) => vec![0],
            (false, false) => Vec::new(),
        }
    } else if prefix {
        return Err(CmdError::bad_args(
            "unexpected endkey argument with --prefix flag",
        ));
    } else if from_key {
        return Err(CmdError::bad_args(
            "unexpected endkey argument with --from-key flag",
        ));
    } else {
        crate::cli::arg_bytes(&args[1])
    };
    Ok((key, end))
}

fn perm_name(t: i32) -> &'static str {
    match t {
        0 => "READ",
        1 => "WRITE",
        _ => "READWRITE",
    }
}

fn print_role(ctx: &Ctx, role: &str, r: &AuthRoleGetResponse) -> Result<(), CmdError> {
    match ctx.printer.format {
        Format::Simple => {
            let range = |p: &Permission| {
                let key = String::from_utf8_lossy(&p.key).into_owned();
                let end = String::from_utf8_lossy(&p.range_end).into_owned();
                let mut s = if end != "\0" {
                    format!("\t[{key}, {end})")
                } else {
                    format!("\t[{key}, <open ended>")
                };
                if super::kv::prefix_end(&p.key) == p.range_end.to_vec() {
                    s.push_str(&format!(" (prefix {key})"));
                }
                s.push('\n');
                s
            };
            let line = |p: &Permission| {
                if p.range_end.is_empty() {
                    format!("\t{}\n", String::from_utf8_lossy(&p.key))
                } else {
                    range(p)
                }
            };
            let mut s = format!("Role {role}\nKV Read:\n");
            for p in r
                .perm
                .iter()
                .filter(|p| p.perm_type == 0 || p.perm_type == 2)
            {
                s.push_str(&line(p));
            }
            s.push_str("KV Write:\n");
            for p in r
                .perm
                .iter()
                .filter(|p| p.perm_type == 1 || p.perm_type == 2)
            {
                s.push_str(&line(p));
            }
            emit(s.as_bytes())
        }
        Format::Json => {
            let perms = r
                .perm
                .iter()
                .map(|p| {
                    Obj::new()
                        .num_omit("permType", i128::from(p.perm_type))
                        .bytes_omit("key", &p.key)
                        .bytes_omit("range_end", &p.range_end)
                        .build()
                })
                .collect();
            emit(
                format!(
                    "{}\n",
                    Obj::new()
                        .opt("header", r.header.as_ref().map(json::header))
                        .list_omit("perm", perms)
                        .build()
                )
                .as_bytes(),
            )
        }
        Format::Fields => {
            let mut s = fields_header(r.header.as_ref());
            for p in &r.perm {
                s.push_str(&format!(
                    "\"PermType\" :  {}\n\"Key\" : {}\n\"RangeEnd\" : {}\n",
                    perm_name(p.perm_type),
                    quote(&p.key),
                    quote(&p.range_end)
                ));
            }
            emit(s.as_bytes())
        }
        Format::Protobuf => emit(&r.encode_to_vec()),
        Format::Table => Err(CmdError::bad_feature(
            "table not supported as output format",
        )),
    }
}
