//! Member and cluster identity exactly as etcd 3.4 derives them, the checks
//! etcd makes before it bootstraps a member, and the membership a member
//! keeps in `<data-dir>/member/cluster`.
//!
//! - Member id (`membership.computeMemberId`, bootstrap form, no time): the
//!   member's peer URLs sorted and concatenated, then the cluster token;
//!   SHA-1; the first 8 bytes big-endian.
//! - Cluster id (`RaftCluster.genID`): the member ids sorted, each as 8
//!   bytes big-endian, concatenated; SHA-1; the first 8 bytes big-endian.
//!
//! The URLs hashed are the text Go's `url.Parse` + `String` give back,
//! which is what etcd hashes; for the usual `http://host:port` that is the
//! input unchanged ([`normalize_url`]).
//!
//! Everything here but [`Membership::load`], [`Membership::save`],
//! [`OnDisk::read`] and [`resolve_system`] is pure: the decisions of
//! [`open`] take what is on disk and a resolver as inputs, so the unit
//! tests drive them directly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

/// `--initial-cluster-token`'s default, etcd's.
pub const DEFAULT_TOKEN: &str = "etcd-cluster";
/// `--name`'s default, etcd's.
pub const DEFAULT_NAME: &str = "default";
/// `--initial-advertise-peer-urls`' default, etcd's: the member ids of a
/// server started without arguments are etcd's (8e9e05c52164694d in
/// cluster cdf818194e3a8c32).
pub const DEFAULT_ADVERTISE_PEER_URL: &str = "http://localhost:2380";
/// The file in `<data-dir>/member` that holds the membership.
pub const CLUSTER_FILE: &str = "cluster";
/// Format version of [`CLUSTER_FILE`]; a file with another version is
/// refused rather than guessed at.
pub const CLUSTER_FILE_VERSION: u32 = 1;
/// etcd's bound on resolving peer host names while comparing
/// `--initial-advertise-peer-urls` with `--initial-cluster`, and its pause
/// between two attempts.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);
const RESOLVE_RETRY_INTERVAL: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------- URLs

/// A URL split as Go's `url.Parse` splits the forms etcd accepts.
struct GoUrl<'a> {
    scheme: String,
    /// `scheme:opaque`, no `//`: never a valid etcd URL (it has no host).
    opaque: bool,
    userinfo: Option<&'a str>,
    host: &'a str,
    path: &'a str,
    force_query: bool,
    query: &'a str,
    fragment: Option<&'a str>,
}

impl<'a> GoUrl<'a> {
    /// Go's `url.Parse`, for what etcd can be given: the error text is
    /// Go's, without the `parse "..."` prefix.
    fn parse(raw: &'a str) -> Result<GoUrl<'a>, String> {
        if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err("net/url: invalid control character in URL".to_string());
        }
        let (rest, fragment) = match raw.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (raw, None),
        };
        let mut u = GoUrl {
            scheme: String::new(),
            opaque: false,
            userinfo: None,
            host: "",
            path: "",
            force_query: false,
            query: "",
            fragment,
        };
        let mut rest = rest;
        for (i, c) in rest.char_indices() {
            match c {
                'a'..='z' | 'A'..='Z' => {}
                '0'..='9' | '+' | '-' | '.' if i > 0 => {}
                ':' if i == 0 => return Err("missing protocol scheme".to_string()),
                ':' => {
                    u.scheme = rest[..i].to_ascii_lowercase();
                    rest = &rest[i + 1..];
                    break;
                }
                _ => break,
            }
        }
        if rest.ends_with('?') && rest.matches('?').count() == 1 {
            u.force_query = true;
            rest = &rest[..rest.len() - 1];
        } else if let Some((r, q)) = rest.split_once('?') {
            rest = r;
            u.query = q;
        }
        if !rest.starts_with('/') {
            if !u.scheme.is_empty() {
                u.opaque = true;
                return Ok(u);
            }
            let segment = rest.split('/').next().unwrap_or("");
            if segment.contains(':') {
                return Err("first path segment in URL cannot contain colon".to_string());
            }
        }
        if rest.starts_with("//") && !rest.starts_with("///") {
            let authority_and_path = &rest[2..];
            let (authority, path) = match authority_and_path.find('/') {
                Some(i) => authority_and_path.split_at(i),
                None => (authority_and_path, ""),
            };
            let host = match authority.rfind('@') {
                Some(i) => {
                    u.userinfo = Some(&authority[..i]);
                    &authority[i + 1..]
                }
                None => authority,
            };
            check_go_host(host)?;
            u.host = host;
            rest = path;
        }
        u.path = rest;
        Ok(u)
    }
}

/// Go's `parseHost` port check: what follows the host is empty or `:`
/// and digits.
fn check_go_host(host: &str) -> Result<(), String> {
    let colon_port = if host.starts_with('[') {
        match host.rfind(']') {
            Some(i) => &host[i + 1..],
            None => return Err("missing ']' in host".to_string()),
        }
    } else {
        match host.rfind(':') {
            Some(i) => &host[i..],
            None => "",
        }
    };
    let valid = colon_port.is_empty()
        || (colon_port.starts_with(':') && colon_port[1..].bytes().all(|b| b.is_ascii_digit()));
    if valid {
        Ok(())
    } else {
        Err(format!("invalid port {} after host", go_quote(colon_port)))
    }
}

/// Go's `net.SplitHostPort`.
fn split_host_port(hostport: &str) -> Option<(&str, &str)> {
    let (host, after_host) = if let Some(inner) = hostport.strip_prefix('[') {
        let end = inner.find(']')?;
        (&inner[..end], &inner[end + 1..])
    } else {
        let i = hostport.rfind(':')?;
        let host = &hostport[..i];
        if host.contains(':') || host.contains('[') || host.contains(']') {
            return None;
        }
        (host, &hostport[i..])
    };
    let port = after_host.strip_prefix(':')?;
    if port.contains(']') || port.contains('[') {
        return None;
    }
    Some((host, port))
}

/// A URL as etcd's `types.NewURLs` accepts it (scheme http, https, unix or
/// unixs; `host:port`; no path), in the text Go's `url.URL.String` gives
/// back: the text etcd hashes into member ids and prints. The errors are
/// etcd's.
pub fn normalize_url(raw: &str) -> Result<String, String> {
    let input = raw.trim();
    let u = GoUrl::parse(input).map_err(|e| format!("parse {}: {e}", go_quote(input)))?;
    if !matches!(u.scheme.as_str(), "http" | "https" | "unix" | "unixs") {
        return Err(format!(
            "URL scheme must be http, https, unix, or unixs: {input}"
        ));
    }
    if u.opaque || split_host_port(u.host).is_none() {
        return Err(format!(
            "URL address does not have the form \"host:port\": {input}"
        ));
    }
    if !u.path.is_empty() {
        return Err(format!("URL must not contain a path: {input}"));
    }
    let mut out = format!("{}://", u.scheme);
    if let Some(user) = u.userinfo {
        out.push_str(user);
        out.push('@');
    }
    out.push_str(u.host);
    if u.force_query || !u.query.is_empty() {
        out.push('?');
        out.push_str(u.query);
    }
    if let Some(f) = u.fragment {
        out.push('#');
        out.push_str(f);
    }
    Ok(out)
}

/// etcd's `types.NewURLs`: each URL checked and normalized, the list
/// sorted.
pub fn normalize_urls<S: AsRef<str>>(raw: &[S]) -> Result<Vec<String>, String> {
    if raw.is_empty() {
        return Err("no valid URLs given".to_string());
    }
    let mut out = raw
        .iter()
        .map(|u| normalize_url(u.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort();
    Ok(out)
}

/// A string as Go's `%q` prints it, for the ASCII text of URLs and names
/// (Rust's `{:?}` escapes the same characters there).
fn go_quote(s: &str) -> String {
    format!("{s:?}")
}

/// A list of strings as Go's `%q` prints a `[]string`: `["a" "b"]`.
fn go_quote_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", items.join(" "))
}

/// `--initial-cluster` parsed as etcd's `types.NewURLsMap`: member name to
/// its peer URLs (normalized, sorted). A name given several times has all
/// its URLs; names are not trimmed (etcd does not trim them either).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlsMap(pub BTreeMap<String, Vec<String>>);

impl UrlsMap {
    pub fn parse(s: &str) -> Result<UrlsMap, String> {
        let mut raw: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for entry in s.split(',').filter(|e| !e.is_empty()) {
            let (name, url) = entry.split_once('=').unwrap_or((entry, ""));
            raw.entry(name.to_string()).or_default().push(url);
        }
        let mut map = BTreeMap::new();
        for (name, urls) in raw {
            map.insert(name, normalize_urls(&urls)?);
        }
        Ok(UrlsMap(map))
    }

    pub fn get(&self, name: &str) -> Option<&[String]> {
        self.0.get(name).map(Vec::as_slice)
    }
}

/// `name=url,...` sorted, as etcd's `URLsMap.String` prints it in messages.
impl fmt::Display for UrlsMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut pairs: Vec<String> = self
            .0
            .iter()
            .flat_map(|(name, urls)| urls.iter().map(move |u| format!("{name}={u}")))
            .collect();
        pairs.sort();
        f.write_str(&pairs.join(","))
    }
}

// ---------------------------------------------------------------- ids

fn sha1_u64(bytes: &[u8]) -> u64 {
    let digest = Sha1::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// etcd's member id at bootstrap: SHA-1 of the sorted peer URLs joined with
/// nothing, then the cluster token.
pub fn member_id<S: AsRef<str>>(peer_urls: &[S], token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(AsRef::as_ref).collect();
    urls.sort_unstable();
    let mut bytes = urls.concat().into_bytes();
    bytes.extend_from_slice(token.as_bytes());
    sha1_u64(&bytes)
}

/// etcd's cluster id: SHA-1 of the sorted member ids, 8 bytes big-endian
/// each.
pub fn cluster_id(member_ids: impl IntoIterator<Item = u64>) -> u64 {
    let mut ids: Vec<u64> = member_ids.into_iter().collect();
    ids.sort_unstable();
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    sha1_u64(&bytes)
}

// ---------------------------------------------------------------- membership

/// One member of the cluster, as `member list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    #[serde(with = "hex_id")]
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Known once the member has published them; for this member, its
    /// `--advertise-client-urls`.
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// Who is in the cluster, and which of them this member is. Members are
/// kept sorted by id (etcd's `member list` order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    cluster_id: u64,
    local_id: u64,
    members: Vec<Member>,
    /// The voters every shard group's log started from (the members the
    /// cluster was bootstrapped with); the member list may have changed
    /// since (member add/remove), which the groups' logs record.
    bootstrap_voters: Vec<u64>,
    /// For a member that joined a running cluster: the version of the
    /// member list it was told, and the ids removed by then.
    joined: Option<Joined>,
}

/// What a joining member was told, kept with its membership so the first
/// start after a crash begins from the same place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    pub version: u64,
    pub removed: Vec<String>,
}

/// `<data-dir>/member/cluster` as written: ids in hex, as etcd prints them.
#[derive(Serialize, Deserialize)]
struct ClusterFile {
    version: u32,
    #[serde(with = "hex_id")]
    cluster_id: u64,
    #[serde(with = "hex_id")]
    local_id: u64,
    members: Vec<Member>,
    /// Hex ids; absent in files from before membership changes, whose
    /// members are the bootstrap members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bootstrap_voters: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    joined: Option<Joined>,
}

mod hex_id {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{id:x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        u64::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
    }
}

/// Go's `%v` of an etcd `*Member`, for the one message that prints one.
fn go_member(m: &Member) -> String {
    format!(
        "&{{{:x} {{[{}] {}}} {{{} [{}]}}}}",
        m.id,
        m.peer_urls.join(" "),
        m.is_learner,
        m.name,
        m.client_urls.join(" ")
    )
}

impl Membership {
    /// etcd's `NewClusterFromURLsMap` and `MemberByName(local_name)`:
    /// every member's id from its peer URLs and the token, the cluster id
    /// from the member ids.
    pub fn from_urls_map(
        urls_map: &UrlsMap,
        token: &str,
        local_name: &str,
    ) -> Result<Membership, String> {
        let mut by_id: BTreeMap<u64, Member> = BTreeMap::new();
        for (name, urls) in &urls_map.0 {
            let m = Member {
                id: member_id(urls, token),
                name: name.clone(),
                peer_urls: urls.clone(),
                client_urls: Vec::new(),
                is_learner: false,
            };
            if by_id.contains_key(&m.id) {
                return Err(format!("member exists with identical ID {}", go_member(&m)));
            }
            if m.id == 0 {
                return Err("cannot use 0 as member id".to_string());
            }
            by_id.insert(m.id, m);
        }
        let local_id = by_id
            .values()
            .find(|m| m.name == local_name)
            .map(|m| m.id)
            .ok_or_else(|| {
                format!(
                    "couldn't find local name {} in the initial cluster configuration",
                    go_quote(local_name)
                )
            })?;
        let members: Vec<Member> = by_id.into_values().collect();
        let membership = Membership {
            cluster_id: cluster_id(members.iter().map(|m| m.id)),
            local_id,
            bootstrap_voters: members.iter().map(|m| m.id).collect(),
            members,
            joined: None,
        };
        membership.check()?;
        Ok(membership)
    }

    /// A member that joined a running cluster: what the cluster told it.
    pub fn joined(
        cluster_id: u64,
        local_id: u64,
        mut members: Vec<Member>,
        bootstrap_voters: Vec<u64>,
        joined: Joined,
    ) -> Result<Membership, String> {
        members.sort_by_key(|m| m.id);
        let membership = Membership {
            cluster_id,
            local_id,
            members,
            bootstrap_voters,
            joined: Some(joined),
        };
        membership.check()?;
        Ok(membership)
    }

    /// The voters every shard group's log starts from.
    pub fn bootstrap_voters(&self) -> &[u64] {
        &self.bootstrap_voters
    }

    /// What this member was told when it joined, if it joined.
    pub fn joined_at(&self) -> Option<&Joined> {
        self.joined.as_ref()
    }

    /// The member list as a membership change left it (this member among
    /// them, unless it was removed: then it keeps the list it had).
    pub fn set_members(&mut self, mut members: Vec<Member>) {
        members.sort_by_key(|m| m.id);
        let local = self.local_member().clone();
        if let Some(m) = members.iter_mut().find(|m| m.id == self.local_id) {
            // What this member published at this start stays.
            m.name = local.name;
            m.client_urls = local.client_urls;
            self.members = members;
        }
    }

    /// The invariants every membership keeps, checked when one is built,
    /// written and read back: ids non-zero, unique and sorted, this member
    /// among them.
    fn check(&self) -> Result<(), String> {
        if self.cluster_id == 0 {
            return Err("cluster id is 0".to_string());
        }
        if self.members.iter().any(|m| m.id == 0) {
            return Err("a member has id 0".to_string());
        }
        if !self.members.windows(2).all(|w| w[0].id < w[1].id) {
            return Err("member ids are not unique and sorted".to_string());
        }
        if self.local().is_none() {
            return Err(format!(
                "this member's id {:x} is not among the members",
                self.local_id
            ));
        }
        Ok(())
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// This member's id: the `member_id` of every response header.
    pub fn local_id(&self) -> u64 {
        self.local_id
    }

    fn local(&self) -> Option<&Member> {
        self.members.iter().find(|m| m.id == self.local_id)
    }

    /// This member.
    pub fn local_member(&self) -> &Member {
        self.local()
            .expect("Membership::check keeps the local member among the members")
    }

    /// Every member, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The voting members' ids, sorted: the raft configuration.
    pub fn voter_ids(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|m| !m.is_learner)
            .map(|m| m.id)
            .collect()
    }

    /// Every member's peer URLs by id (this member's included), for the
    /// peer transport.
    pub fn peer_urls(&self) -> BTreeMap<u64, &[String]> {
        self.members
            .iter()
            .map(|m| (m.id, m.peer_urls.as_slice()))
            .collect()
    }

    /// What this member publishes at every start (etcd's `publish`): its
    /// name and client URLs. Returns whether they changed.
    pub fn publish_local(&mut self, name: &str, client_urls: &[String]) -> bool {
        let local_id = self.local_id;
        let Some(m) = self.members.iter_mut().find(|m| m.id == local_id) else {
            return false;
        };
        let changed = m.name != name || m.client_urls != client_urls;
        m.name = name.to_string();
        m.client_urls = client_urls.to_vec();
        changed
    }

    fn to_file_text(&self) -> Result<String, String> {
        self.check()?;
        let file = ClusterFile {
            version: CLUSTER_FILE_VERSION,
            cluster_id: self.cluster_id,
            local_id: self.local_id,
            members: self.members.clone(),
            bootstrap_voters: Some(
                self.bootstrap_voters
                    .iter()
                    .map(|v| format!("{v:x}"))
                    .collect(),
            ),
            joined: self.joined.clone(),
        };
        serde_json::to_string_pretty(&file)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| e.to_string())
    }

    fn from_file_text(text: &str) -> Result<Membership, String> {
        let file: ClusterFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if file.version != CLUSTER_FILE_VERSION {
            return Err(format!(
                "format version {} (this ferrokv reads version {CLUSTER_FILE_VERSION})",
                file.version
            ));
        }
        let bootstrap_voters = match file.bootstrap_voters {
            Some(v) => v
                .iter()
                .map(|s| u64::from_str_radix(s, 16).map_err(|e| format!("voter id {s:?}: {e}")))
                .collect::<Result<Vec<u64>, String>>()?,
            None => file
                .members
                .iter()
                .filter(|m| !m.is_learner)
                .map(|m| m.id)
                .collect(),
        };
        let membership = Membership {
            cluster_id: file.cluster_id,
            local_id: file.local_id,
            members: file.members,
            bootstrap_voters,
            joined: file.joined,
        };
        membership.check()?;
        Ok(membership)
    }

    /// The membership kept in `member_dir`, if one was written.
    pub fn load(member_dir: &Path) -> Result<Option<Membership>, String> {
        let path = member_dir.join(CLUSTER_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Membership::from_file_text(&text)
                .map(Some)
                .map_err(|e| format!("{} is corrupt: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes the membership into `member_dir` durably: a temporary file,
    /// fsynced, renamed over the old one, the directory fsynced; a crash
    /// leaves the old file or the new one, never a mix.
    pub fn save(&self, member_dir: &Path) -> Result<(), String> {
        let text = self.to_file_text()?;
        let fail = |path: &Path, e: std::io::Error| format!("cannot write {}: {e}", path.display());
        std::fs::create_dir_all(member_dir).map_err(|e| fail(member_dir, e))?;
        let path = member_dir.join(CLUSTER_FILE);
        let tmp = member_dir.join(format!("{CLUSTER_FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(|e| fail(&tmp, e))?;
        f.write_all(text.as_bytes()).map_err(|e| fail(&tmp, e))?;
        f.sync_all().map_err(|e| fail(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| fail(&path, e))?;
        std::fs::File::open(member_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail(member_dir, e))?;
        // Read back what a restart will read.
        match Membership::load(member_dir)? {
            Some(back) if back == *self => Ok(()),
            _ => Err(format!("{} did not read back as written", path.display())),
        }
    }
}

// ---------------------------------------------------------------- bootstrap

/// `--initial-cluster-state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

impl ClusterState {
    pub fn parse(s: &str) -> Option<ClusterState> {
        match s {
            "new" => Some(ClusterState::New),
            "existing" => Some(ClusterState::Existing),
            _ => None,
        }
    }
}

/// Resolves `host:port` to `ip:port` (the first address), as Go's
/// `net.ResolveTCPAddr` does for etcd.
pub type Resolver<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// The system resolver, retried for up to [`RESOLVE_TIMEOUT`] as etcd
/// retries.
pub fn resolve_system(hostport: &str) -> Result<String, String> {
    use std::net::ToSocketAddrs;
    let deadline = Instant::now() + RESOLVE_TIMEOUT;
    loop {
        let err = match hostport.to_socket_addrs() {
            Ok(mut addrs) => match addrs.next() {
                Some(a) => return Ok(a.to_string()),
                None => "no such host".to_string(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() + RESOLVE_RETRY_INTERVAL > deadline {
            return Err(err);
        }
        log::warn!(
            "failed to resolve URL host {hostport} (retrying in {RESOLVE_RETRY_INTERVAL:?}): {err}"
        );
        std::thread::sleep(RESOLVE_RETRY_INTERVAL);
    }
}

/// etcd's `resolveURL`: a URL with a DNS host name (not `localhost`, not
/// an IP) gets the address it resolves to.
fn resolve_url(u: &str, resolve: Resolver) -> Result<String, String> {
    let scheme_end = u.find("://").map_or(0, |i| i + 3);
    let scheme = &u[..scheme_end.saturating_sub(3)];
    if scheme == "unix" || scheme == "unixs" {
        return Ok(u.to_string());
    }
    let rest = &u[scheme_end..];
    let authority_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let Some((host, _)) = split_host_port(hostport) else {
        return Err(format!("address {hostport}: missing port in address"));
    };
    if host == "localhost" || host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(u.to_string());
    }
    let resolved = resolve(hostport)?;
    let at = scheme_end + (authority.len() - hostport.len());
    Ok(format!(
        "{}{resolved}{}",
        &u[..at],
        &u[at + hostport.len()..]
    ))
}

/// etcd's `netutil.URLStringsEqual`: equal as text, or else once every
/// host name is resolved. The error says why not.
fn urls_equal(a: &[String], b: &[String], resolve: Resolver) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!(
            "len({}) != len({})",
            go_quote_list(a),
            go_quote_list(b)
        ));
    }
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    if a == b {
        return Ok(());
    }
    let resolve_all = |urls: &[String]| -> Result<Vec<String>, String> {
        let mut out = urls
            .iter()
            .map(|u| {
                resolve_url(u, resolve)
                    .map_err(|e| format!("failed to resolve {} ({e})", go_quote(u)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.sort();
        Ok(out)
    };
    let (ra, rb) = (resolve_all(&a)?, resolve_all(&b)?);
    for (x, y) in ra.iter().zip(&rb) {
        if x != y {
            return Err(format!("resolved urls: {} != {}", go_quote(x), go_quote(y)));
        }
    }
    Ok(())
}

/// etcd's `hasLocalMember`.
fn has_local_member(name: &str, urls_map: &UrlsMap) -> Result<(), String> {
    match urls_map.get(name) {
        Some(_) => Ok(()),
        None => Err(format!(
            "couldn't find local name {} in the initial cluster configuration",
            go_quote(name)
        )),
    }
}

/// etcd's `advertiseMatchesCluster`: this member's `--initial-cluster`
/// entry and its `--initial-advertise-peer-urls` are the same URLs.
fn advertise_matches_cluster(
    name: &str,
    urls_map: &UrlsMap,
    advertise_peer_urls: &[String],
    resolve: Resolver,
) -> Result<(), String> {
    let mut urls = urls_map.get(name).unwrap_or_default().to_vec();
    let mut apurls = advertise_peer_urls.to_vec();
    urls.sort();
    apurls.sort();
    let err = match urls_equal(&apurls, &urls, resolve) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let init: BTreeSet<&String> = urls.iter().collect();
    let advertised: BTreeSet<&String> = apurls.iter().collect();
    let only_init: Vec<String> = init
        .difference(&advertised)
        .map(|u| format!("{name}={u}"))
        .collect();
    if !only_init.is_empty() {
        return Err(format!(
            "--initial-cluster has {} but missing from --initial-advertise-peer-urls={} ({err})",
            only_init.join(","),
            apurls.join(",")
        ));
    }
    // etcd prints this member's advertised URLs as the --initial-cluster
    // it compared against.
    let as_cluster = UrlsMap(BTreeMap::from([(name.to_string(), apurls.clone())]));
    let only_advertised: Vec<&str> = advertised.difference(&init).map(|u| u.as_str()).collect();
    if !only_advertised.is_empty() {
        return Err(format!(
            "--initial-advertise-peer-urls has {} but missing from --initial-cluster={as_cluster}",
            only_advertised.join(",")
        ));
    }
    Err(format!(
        "failed to resolve {} to match --initial-cluster={as_cluster} ({err})",
        apurls.join(",")
    ))
}

/// etcd's `checkDuplicateURL`: no URL is given twice, in one member or
/// across members.
fn check_duplicate_url(urls_map: &UrlsMap) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for url in urls_map.0.values().flatten() {
        if !seen.insert(url) {
            return Err(format!("initial cluster {urls_map} has duplicate url"));
        }
    }
    Ok(())
}

/// The flags a member's membership is bootstrapped from.
#[derive(Clone, Copy, Debug)]
pub struct BootstrapFlags<'a> {
    /// `--name`.
    pub name: &'a str,
    /// `--initial-cluster`, as given (parsed only when bootstrapping, as
    /// etcd parses it only then).
    pub initial_cluster: &'a str,
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`; empty is a valid token, hashed as such
    /// (etcd does the same).
    pub initial_cluster_token: &'a str,
    /// `--initial-advertise-peer-urls`, normalized.
    pub advertise_peer_urls: &'a [String],
    /// `--advertise-client-urls`, published for this member.
    pub advertise_client_urls: &'a [String],
}

/// etcd's `VerifyBootstrap` (state `new`) and `NewClusterFromURLsMap`: the
/// membership a new member starts with, or etcd's reason to refuse.
pub fn bootstrap(flags: &BootstrapFlags, resolve: Resolver) -> Result<Membership, String> {
    let urls_map = UrlsMap::parse(flags.initial_cluster)
        .map_err(|e| format!("error setting up initial cluster: {e}"))?;
    has_local_member(flags.name, &urls_map)?;
    advertise_matches_cluster(flags.name, &urls_map, flags.advertise_peer_urls, resolve)?;
    check_duplicate_url(&urls_map)?;
    let mut membership =
        Membership::from_urls_map(&urls_map, flags.initial_cluster_token, flags.name)?;
    membership.publish_local(flags.name, flags.advertise_client_urls);
    Ok(membership)
}

/// etcd's `VerifyJoinExisting`: the checks before a member asks the
/// running cluster (the other members `--initial-cluster` names) for its
/// membership.
fn join_existing(flags: &BootstrapFlags) -> Result<UrlsMap, String> {
    let urls_map = UrlsMap::parse(flags.initial_cluster)
        .map_err(|e| format!("error setting up initial cluster: {e}"))?;
    has_local_member(flags.name, &urls_map)?;
    check_duplicate_url(&urls_map)?;
    Ok(urls_map)
}

/// How a member came by its membership at this start.
#[derive(Debug)]
pub enum Opened {
    /// Read from `<data-dir>/member/cluster`; the `--initial-cluster*`
    /// flags were ignored, as etcd ignores them once a member has data.
    /// `published` says whether this member's name or client URLs
    /// changed since (then the file is to be written again).
    Restarted {
        membership: Membership,
        published: bool,
    },
    /// Derived from the flags; not yet written.
    Bootstrapped(Membership),
    /// To be asked of the running members (`--initial-cluster-state
    /// existing` and no data): the cluster `--initial-cluster` names.
    Join(UrlsMap),
}

/// What the data dir holds, as far as the membership is concerned.
#[derive(Debug)]
pub enum OnDisk {
    /// `<data-dir>/member/cluster` was read.
    Membership(Membership),
    /// Member data without a membership file: written by a ferrokv from
    /// before the file existed, or restored by `ferroutl snapshot restore`.
    DataOnly,
    /// No member data at all.
    Empty,
}

impl OnDisk {
    pub fn read(member_dir: &Path) -> Result<OnDisk, String> {
        if let Some(m) = Membership::load(member_dir)? {
            return Ok(OnDisk::Membership(m));
        }
        let has_data = match std::fs::read_dir(member_dir) {
            Ok(mut entries) => entries.next().is_some(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(format!("cannot read {}: {e}", member_dir.display())),
        };
        Ok(if has_data {
            OnDisk::DataOnly
        } else {
            OnDisk::Empty
        })
    }
}

/// The membership this start uses: the one on disk, or else a bootstrap
/// from the flags (a member with data but no membership file bootstraps
/// from its flags whatever `--initial-cluster-state` says, as a restored
/// etcd member starts from what its restore was told).
pub fn open(on_disk: OnDisk, flags: &BootstrapFlags, resolve: Resolver) -> Result<Opened, String> {
    match (on_disk, flags.initial_cluster_state) {
        (OnDisk::Membership(mut membership), _) => {
            let published = membership.publish_local(flags.name, flags.advertise_client_urls);
            Ok(Opened::Restarted {
                membership,
                published,
            })
        }
        (OnDisk::DataOnly, _) | (OnDisk::Empty, ClusterState::New) => {
            bootstrap(flags, resolve).map(Opened::Bootstrapped)
        }
        (OnDisk::Empty, ClusterState::Existing) => join_existing(flags).map(Opened::Join),
    }
}

/// `<data-dir>/member`.
pub fn member_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_dns(h: &str) -> Result<String, String> {
        Err(format!("lookup {h}: no DNS in unit tests"))
    }

    fn urls(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn flags<'a>(
        name: &'a str,
        cluster: &'a str,
        token: &'a str,
        advertise: &'a [String],
    ) -> BootstrapFlags<'a> {
        BootstrapFlags {
            name,
            initial_cluster: cluster,
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: token,
            advertise_peer_urls: advertise,
            advertise_client_urls: &[],
        }
    }

    fn ids_of(cluster: &str, token: &str) -> (u64, Vec<(String, u64)>) {
        let map = UrlsMap::parse(cluster).unwrap();
        let first = map.0.keys().next().unwrap().clone();
        let m = Membership::from_urls_map(&map, token, &first).unwrap();
        let by_name = m.members().iter().map(|m| (m.name.clone(), m.id)).collect();
        (m.cluster_id(), by_name)
    }

    // Expected ids below were read from `etcdctl member list -w json` of
    // real etcd 3.4.23 clusters started with these flags (and are checked
    // against live etcd again by tests/tests/cluster_identity.rs).

    #[test]
    fn etcd_without_arguments() {
        let (cid, members) = ids_of("default=http://localhost:2380", "etcd-cluster");
        assert_eq!(members, vec![("default".to_string(), 0x8e9e05c52164694d)]);
        assert_eq!(cid, 0xcdf818194e3a8c32);
    }

    #[test]
    fn three_members_default_token() {
        let (cid, members) = ids_of(
            "m1=http://127.0.0.1:12380,m2=http://127.0.0.1:12381,m3=http://127.0.0.1:12382",
            "etcd-cluster",
        );
        // member list order: by id.
        assert_eq!(
            members,
            vec![
                ("m2".to_string(), 0x20841a002de00821),
                ("m3".to_string(), 0x248ff1817228a82b),
                ("m1".to_string(), 0xddd67b312462fd7b),
            ]
        );
        assert_eq!(cid, 0xa540bbe014239a05);
    }

    #[test]
    fn three_members_one_with_two_urls_given_unsorted() {
        let (cid, members) = ids_of(
            "m1=http://127.0.0.1:22381,m2=http://localhost:22382,m1=http://127.0.0.1:22380,m3=http://127.0.0.1:22383",
            "ferrokv-pin",
        );
        assert_eq!(
            members,
            vec![
                ("m1".to_string(), 0x9487ee16fa328a05),
                ("m3".to_string(), 0xb4d86050ef20d004),
                ("m2".to_string(), 0xd2f9b01551f43b17),
            ]
        );
        assert_eq!(cid, 0x7027a34f57e1fd4f);
    }

    #[test]
    fn empty_token_is_hashed_as_empty() {
        let (cid, members) = ids_of("solo=http://127.0.0.1:32380", "");
        assert_eq!(members, vec![("solo".to_string(), 0xc83a488c3d6b1d02)]);
        assert_eq!(cid, 0x269ae7c48ad9fb85);
    }

    #[test]
    fn urls_normalize_as_go_prints_them() {
        assert_eq!(
            normalize_url(" HTTP://127.0.0.1:2380 ").unwrap(),
            "http://127.0.0.1:2380"
        );
        assert_eq!(normalize_url("http://Host:1").unwrap(), "http://Host:1");
        assert_eq!(
            normalize_url("https://[::1]:2380").unwrap(),
            "https://[::1]:2380"
        );
        assert_eq!(normalize_url("unix://sock:0").unwrap(), "unix://sock:0");
        assert_eq!(
            normalize_url("127.0.0.1:2380").unwrap_err(),
            "parse \"127.0.0.1:2380\": first path segment in URL cannot contain colon"
        );
        assert_eq!(
            normalize_url("localhost:2380").unwrap_err(),
            "URL scheme must be http, https, unix, or unixs: localhost:2380"
        );
        assert_eq!(
            normalize_url("http://127.0.0.1").unwrap_err(),
            "URL address does not have the form \"host:port\": http://127.0.0.1"
        );
        assert_eq!(
            normalize_url("http://127.0.0.1:2380/x").unwrap_err(),
            "URL must not contain a path: http://127.0.0.1:2380/x"
        );
        assert_eq!(
            normalize_url("http://h:x1").unwrap_err(),
            "parse \"http://h:x1\": invalid port \":x1\" after host"
        );
        assert_eq!(
            normalize_url("").unwrap_err(),
            "URL scheme must be http, https, unix, or unixs: "
        );
    }

    #[test]
    fn initial_cluster_parses_as_etcd() {
        let m = UrlsMap::parse("a=http://h:2,a=http://h:1,,b=http://g:1").unwrap();
        assert_eq!(
            m.get("a").unwrap(),
            &urls(&["http://h:1", "http://h:2"])[..]
        );
        assert_eq!(m.to_string(), "a=http://h:1,a=http://h:2,b=http://g:1");
        // Names are not trimmed.
        assert!(UrlsMap::parse("a=http://h:1, b=http://g:1")
            .unwrap()
            .get(" b")
            .is_some());
        assert_eq!(
            UrlsMap::parse("a").unwrap_err(),
            "URL scheme must be http, https, unix, or unixs: "
        );
    }

    #[test]
    fn bootstrap_refusals_in_etcd_words() {
        // Each message as etcd 3.4.23 printed it for the same flags.
        let ap = urls(&["http://127.0.0.1:42380"]);
        let e =
            bootstrap(&flags("m2", "m1=http://127.0.0.1:42380", "t", &ap), &no_dns).unwrap_err();
        assert_eq!(
            e,
            "couldn't find local name \"m2\" in the initial cluster configuration"
        );

        let e = bootstrap(
            &flags("default", "default=http://localhost:2380", "t", &ap),
            &no_dns,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "--initial-cluster has default=http://localhost:2380 but missing from \
             --initial-advertise-peer-urls=http://127.0.0.1:42380 \
             (resolved urls: \"http://127.0.0.1:42380\" != \"http://localhost:2380\")"
        );

        let e = bootstrap(
            &flags(
                "default",
                "default=http://127.0.0.1:42380,default=http://127.0.0.1:42381",
                "t",
                &ap,
            ),
            &no_dns,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "--initial-cluster has default=http://127.0.0.1:42381 but missing from \
             --initial-advertise-peer-urls=http://127.0.0.1:42380 \
             (len([\"http://127.0.0.1:42380\"]) != len([\"http://127.0.0.1:42380\" \"http://127.0.0.1:42381\"]))"
        );

        let two = urls(&["http://127.0.0.1:42380", "http://127.0.0.1:42381"]);
        let e = bootstrap(
            &flags("default", "default=http://127.0.0.1:42380", "t", &two),
            &no_dns,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "--initial-advertise-peer-urls has http://127.0.0.1:42381 but missing from \
             --initial-cluster=default=http://127.0.0.1:42380,default=http://127.0.0.1:42381"
        );

        let e = bootstrap(
            &flags(
                "default",
                "default=http://127.0.0.1:42380,b=http://127.0.0.1:42380",
                "t",
                &ap,
            ),
            &no_dns,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "initial cluster b=http://127.0.0.1:42380,default=http://127.0.0.1:42380 has duplicate url"
        );

        let e = bootstrap(
            &flags("default", "default=127.0.0.1:42380", "t", &ap),
            &no_dns,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "error setting up initial cluster: parse \"127.0.0.1:42380\": first path segment in URL cannot contain colon"
        );
    }

    #[test]
    fn advertised_host_names_match_once_resolved() {
        let ap = urls(&["http://peer.example:2380"]);
        let resolve = |h: &str| -> Result<String, String> {
            assert_eq!(h, "peer.example:2380");
            Ok("10.0.0.7:2380".to_string())
        };
        let f = flags("m", "m=http://10.0.0.7:2380", "t", &ap);
        let m = bootstrap(&f, &resolve).unwrap();
        // The id is that of the --initial-cluster URL, as etcd's.
        assert_eq!(m.local_id(), member_id(&["http://10.0.0.7:2380"], "t"));
        let e = bootstrap(&f, &no_dns).unwrap_err();
        assert_eq!(
            e,
            "--initial-cluster has m=http://10.0.0.7:2380 but missing from \
             --initial-advertise-peer-urls=http://peer.example:2380 \
             (failed to resolve \"http://peer.example:2380\" (lookup peer.example:2380: no DNS in unit tests))"
        );
    }

    #[test]
    fn existing_state_asks_the_running_members() {
        let ap = urls(&["http://127.0.0.1:2380"]);
        let mut f = flags(
            "a",
            "a=http://127.0.0.1:2380,b=http://127.0.0.2:2380",
            "t",
            &ap,
        );
        f.initial_cluster_state = ClusterState::Existing;
        let Ok(Opened::Join(map)) = open(OnDisk::Empty, &f, &no_dns) else {
            panic!("join");
        };
        assert_eq!(map.0.len(), 2);
        // etcd's VerifyJoinExisting checks come first.
        f.name = "c";
        let e = open(OnDisk::Empty, &f, &no_dns).unwrap_err();
        assert_eq!(
            e,
            "couldn't find local name \"c\" in the initial cluster configuration"
        );
        // A member with data bootstraps from its flags.
        f.name = "a";
        assert!(matches!(
            open(OnDisk::DataOnly, &f, &no_dns),
            Ok(Opened::Bootstrapped(_))
        ));
    }

    #[test]
    fn a_restarted_member_keeps_its_ids_and_publishes_its_name() {
        let ap = urls(&["http://localhost:2380"]);
        let mut f = flags(
            "default",
            "default=http://localhost:2380",
            DEFAULT_TOKEN,
            &ap,
        );
        let client = urls(&["http://localhost:2379"]);
        f.advertise_client_urls = &client;
        let Ok(Opened::Bootstrapped(first)) = open(OnDisk::Empty, &f, &no_dns) else {
            panic!("bootstrap");
        };
        assert_eq!(first.local_member().client_urls, client);
        let dir = std::env::temp_dir().join(format!("ferrokv-cluster-{}", std::process::id()));
        let member = member_dir(&dir);
        first.save(&member).unwrap();
        assert!(!member.join("cluster.tmp").exists());

        // Other flags on restart: ignored but for the published attributes.
        let other = urls(&["http://10.9.9.9:1"]);
        let g = BootstrapFlags {
            name: "renamed",
            initial_cluster: "renamed=http://10.9.9.9:1",
            initial_cluster_state: ClusterState::Existing,
            initial_cluster_token: "other",
            advertise_peer_urls: &other,
            advertise_client_urls: &[],
        };
        let on_disk = OnDisk::read(&member).unwrap();
        let Ok(Opened::Restarted {
            membership: again,
            published: true,
        }) = open(on_disk, &g, &no_dns)
        else {
            panic!("restart");
        };
        assert_eq!(
            (again.cluster_id(), again.local_id()),
            (0xcdf818194e3a8c32, 0x8e9e05c52164694d)
        );
        assert_eq!(again.local_member().name, "renamed");
        assert_eq!(again.local_member().peer_urls, ap);
        assert_eq!(again.voter_ids(), vec![0x8e9e05c52164694d]);

        std::fs::write(member.join(CLUSTER_FILE), "{\"version\":2}").unwrap();
        let e = OnDisk::read(&member).unwrap_err();
        assert!(e.contains("is corrupt"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(OnDisk::read(&member), Ok(OnDisk::Empty)));
    }

    #[test]
    fn membership_file_round_trips_and_is_checked() {
        let map = UrlsMap::parse("a=http://h:1,b=http://h:2,b=http://h:3").unwrap();
        let mut m = Membership::from_urls_map(&map, "tok", "b").unwrap();
        m.publish_local("b", &urls(&["http://h:9"]));
        let text = m.to_file_text().unwrap();
        assert!(
            text.contains(&format!("\"local_id\": \"{:x}\"", m.local_id())),
            "{text}"
        );
        assert_eq!(Membership::from_file_text(&text).unwrap(), m);
        let peers = m.peer_urls();
        assert_eq!(
            peers[&member_id(&["http://h:3", "http://h:2"], "tok")],
            &urls(&["http://h:2", "http://h:3"])[..]
        );
        let bad = text.replace(
            &format!("\"local_id\": \"{:x}\"", m.local_id()),
            "\"local_id\": \"1\"",
        );
        assert!(Membership::from_file_text(&bad).is_err());
    }
}
