//! member list / add / remove / update / promote.

use ferrokv_wire::pb::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use prost::Message;

use crate::client::path;
use crate::ctx::{emit, Ctx};
use crate::error::CmdError;
use crate::json::{self, Obj};
use crate::printer::Format;

pub async fn list(ctx: Ctx) -> Result<(), CmdError> {
    let client = ctx.client().await?;
    let resp: MemberListResponse = ctx
        .call(&client, path::MEMBER_LIST, MemberListRequest {})
        .await?;
    emit(&ctx.printer.member_list(&resp)?)
}

/// A member id argument: hex, as etcdctl's `strconv.ParseUint(arg, 16, 64)`.
fn member_id(arg: &str) -> Result<u64, CmdError> {
    u64::from_str_radix(arg, 16).map_err(|_| {
        let quoted = crate::gofmt::quote(arg.as_bytes());
        let why = if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_hexdigit()) {
            "value out of range"
        } else {
            "invalid syntax"
        };
        CmdError::bad_args(format!(
            "bad member ID arg (strconv.ParseUint: parsing {quoted}: {why}), expecting ID in Hex"
        ))
    })
}

/// The response as the non-simple formats print it; `simple` is given.
fn print_members<M: Message>(
    ctx: &Ctx,
    resp: &M,
    header: Option<&ferrokv_wire::pb::etcdserverpb::ResponseHeader>,
    members: &[ferrokv_wire::pb::etcdserverpb::Member],
    member: Option<&ferrokv_wire::pb::etcdserverpb::Member>,
    simple: String,
) -> Result<(), CmdError> {
    match ctx.printer.format {
        Format::Simple => emit(simple.as_bytes()),
        Format::Json => {
            let body = Obj::new()
                .opt("header", header.map(json::header))
                .opt("member", member.map(json::member))
                .list_omit("members", members.iter().map(json::member).collect())
                .build();
            emit(format!("{body}\n").as_bytes())
        }
        Format::Protobuf => emit(&resp.encode_to_vec()),
        // etcdctl has no fields or table form for membership changes; the
        // change is made first, then the format refused.
        Format::Fields => Err(CmdError::bad_feature(
            "fields not supported as output format",
        )),
        Format::Table => Err(CmdError::bad_feature(
            "table not supported as output format",
        )),
    }
}

/// etcd's `types.NewURLs` checks on each peer URL (a failure is exit 1).
fn check_peer_urls(urls: &[String]) -> Result<(), CmdError> {
    for u in urls {
        let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
        if !matches!(scheme, "http" | "https" | "unix" | "unixs") {
            return Err(CmdError::error(format!(
                "URL scheme must be http, https, unix, or unixs: {u}"
            )));
        }
        let (host, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        let has_port = host
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() || p.chars().all(|c| c.is_ascii_digit()));
        if !has_port {
            return Err(CmdError::error(format!(
                "URL address does not have the form \"host:port\": {u}"
            )));
        }
        if !path.is_empty() {
            return Err(CmdError::error(format!("URL must not contain a path: {u}")));
        }
    }
    Ok(())
}

pub async fn add(ctx: Ctx) -> Result<(), CmdError> {
    if ctx.inv.args.len() != 1 {
        return Err(CmdError::bad_args("member name not provided"));
    }
    let name = ctx.inv.args[0].clone();
    let peer_urls = ctx.inv.string("peer-urls");
    if peer_urls.is_empty() {
        return Err(CmdError::bad_args("member peer urls not provided"));
    }
    let urls: Vec<String> = peer_urls.split(',').map(str::to_string).collect();
    check_peer_urls(&urls)?;
    let client = ctx.client().await?;
    let req = MemberAddRequest {
        peer_ur_ls: urls,
        is_learner: ctx.inv.bool("learner"),
    };
    let resp: MemberAddResponse = ctx.call(&client, path::MEMBER_ADD, req).await?;
    let member = resp.member.clone().unwrap_or_default();
    let cluster_id = resp.header.as_ref().map_or(0, |h| h.cluster_id);
    // etcdctl 3.4 says "added" for learners too (3.5: "added as learner").
    let mut simple = format!(
        "Member {:>16x} added to cluster {:>16x}\n",
        member.id, cluster_id
    );
    let mut conf = Vec::new();
    for m in &resp.members {
        for u in &m.peer_ur_ls {
            let n = if m.id == member.id { &name } else { &m.name };
            conf.push(format!("{n}={u}"));
        }
    }
    simple.push_str(&format!(
        "\nETCD_NAME={}\nETCD_INITIAL_CLUSTER={}\nETCD_INITIAL_ADVERTISE_PEER_URLS={}\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
        crate::gofmt::quote(name.as_bytes()),
        crate::gofmt::quote(conf.join(",").as_bytes()),
        crate::gofmt::quote(peer_urls.as_bytes())
    ));
    print_members(
        &ctx,
        &resp,
        resp.header.as_ref(),
        &resp.members,
        resp.member.as_ref(),
        simple,
    )
}

/// The one argument of remove, update and promote: a member id in hex.
fn target_member(ctx: &Ctx) -> Result<u64, CmdError> {
    match ctx.inv.args.as_slice() {
        [id] => member_id(id),
        _ => Err(CmdError::bad_args("member ID is not provided")),
    }
}

pub async fn remove(ctx: Ctx) -> Result<(), CmdError> {
    let id = target_member(&ctx)?;
    let client = ctx.client().await?;
    let resp: MemberRemoveResponse = ctx
        .call(&client, path::MEMBER_REMOVE, MemberRemoveRequest { id })
        .await?;
    let cluster_id = resp.header.as_ref().map_or(0, |h| h.cluster_id);
    let simple = format!("Member {id:>16x} removed from cluster {cluster_id:>16x}\n");
    print_members(
        &ctx,
        &resp,
        resp.header.as_ref(),
        &resp.members,
        None,
        simple,
    )
}

pub async fn update(ctx: Ctx) -> Result<(), CmdError> {
    let id = target_member(&ctx)?;
    let peer_urls = ctx.inv.string("peer-urls");
    if peer_urls.is_empty() {
        return Err(CmdError::bad_args("member peer urls not provided"));
    }
    let urls: Vec<String> = peer_urls.split(',').map(str::to_string).collect();
    check_peer_urls(&urls)?;
    let client = ctx.client().await?;
    let req = MemberUpdateRequest {
        id,
        peer_ur_ls: urls,
    };
    let resp: MemberUpdateResponse = ctx.call(&client, path::MEMBER_UPDATE, req).await?;
    let cluster_id = resp.header.as_ref().map_or(0, |h| h.cluster_id);
    let simple = format!("Member {id:>16x} updated in cluster {cluster_id:>16x}\n");
    print_members(
        &ctx,
        &resp,
        resp.header.as_ref(),
        &resp.members,
        None,
        simple,
    )
}

pub async fn promote(ctx: Ctx) -> Result<(), CmdError> {
    let id = target_member(&ctx)?;
    let client = ctx.client().await?;
    let resp: MemberPromoteResponse = ctx
        .call(&client, path::MEMBER_PROMOTE, MemberPromoteRequest { id })
        .await?;
    let cluster_id = resp.header.as_ref().map_or(0, |h| h.cluster_id);
    let simple = format!("Member {id:>16x} promoted in cluster {cluster_id:>16x}\n");
    print_members(
        &ctx,
        &resp,
        resp.header.as_ref(),
        &resp.members,
        None,
        simple,
    )
}
