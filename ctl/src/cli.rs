//! etcdctl's command line: the command tree, every flag with its default
//! and help text, a pflag-compatible parser (the same error words), and the
//! usage text etcdctl prints on `--help` and after a usage error.

use std::collections::HashMap;

use crate::table::tabwrite;

/// How a flag's value is parsed and shown in usage text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Str,
    Int,
    Uint,
    Duration,
    /// Comma-separated, repeatable (`--endpoints`).
    StrSlice,
}

/// One flag: etcdctl's name, shorthand, default as printed, help text.
#[derive(Clone, Copy, Debug)]
pub struct Flag {
    pub name: &'static str,
    pub short: Option<char>,
    pub kind: Kind,
    pub default: &'static str,
    pub usage: &'static str,
    /// Accepted but left out of usage text: ferroctl's additions (from
    /// etcdctl 3.5), so the help stays byte-for-byte 3.4's.
    pub hidden: bool,
}

const fn flag(
    name: &'static str,
    short: Option<char>,
    kind: Kind,
    default: &'static str,
    usage: &'static str,
) -> Flag {
    Flag {
        name,
        short,
        kind,
        default,
        usage,
        hidden: false,
    }
}

const fn hidden(name: &'static str, kind: Kind, default: &'static str) -> Flag {
    Flag {
        name,
        short: None,
        kind,
        default,
        usage: "",
        hidden: true,
    }
}

use Kind::*;

/// etcdctl's persistent flags, in pflag's sorted order.
pub const GLOBAL_FLAGS: &[Flag] = &[
    flag("cacert", None, Str, "", "verify certificates of TLS-enabled secure servers using this CA bundle"),
    flag("cert", None, Str, "", "identify secure client using this TLS certificate file"),
    flag("command-timeout", None, Duration, "5s", "timeout for short running command (excluding dial timeout)"),
    flag("debug", None, Bool, "false", "enable client-side debug logging"),
    flag("dial-timeout", None, Duration, "2s", "dial timeout for client connections"),
    flag("discovery-srv", Some('d'), Str, "", "domain name to query for SRV records describing cluster endpoints"),
    flag("discovery-srv-name", None, Str, "", "service name to query when using DNS discovery"),
    flag("endpoints", None, StrSlice, "[127.0.0.1:2379]", "gRPC endpoints"),
    flag("hex", None, Bool, "false", "print byte strings as hex encoded strings"),
    flag("insecure-discovery", None, Bool, "true", "accept insecure SRV records describing cluster endpoints"),
    flag("insecure-skip-tls-verify", None, Bool, "false", "skip server certificate verification (CAUTION: this option should be enabled only for testing purposes)"),
    flag("insecure-transport", None, Bool, "true", "disable transport security for client connections"),
    flag("keepalive-time", None, Duration, "2s", "keepalive time for client connections"),
    flag("keepalive-timeout", None, Duration, "6s", "keepalive timeout for client connections"),
    flag("key", None, Str, "", "identify secure client using this TLS key file"),
    flag("password", None, Str, "", "password for authentication (if this option is used, --user option shouldn't include password)"),
    flag("user", None, Str, "", "username[:password] for authentication (prompt if password is not supplied)"),
    flag("write-out", Some('w'), Str, "simple", "set the output format (fields, json, protobuf, simple, table)"),
];

/// One command of the tree.
#[derive(Debug)]
pub struct Command {
    /// Space-separated path below `etcdctl`, e.g. "lease grant".
    pub path: &'static str,
    pub short: &'static str,
    /// The arguments part of cobra's `Use`, e.g. "<ttl>".
    pub args: &'static str,
    pub long: &'static str,
    pub flags: &'static [Flag],
}

const fn cmd(
    path: &'static str,
    short: &'static str,
    args: &'static str,
    flags: &'static [Flag],
) -> Command {
    Command {
        path,
        short,
        args,
        long: "",
        flags,
    }
}

const PUT_LONG: &str = "
Puts the given key into the store.

When <value> begins with '-', <value> is interpreted as a flag.
Insert '--' for workaround:

$ put <key> -- <value>
$ put -- <key> <value>

If <value> isn't given as a command line argument and '--ignore-value' is not specified,
this command tries to read the value from standard input.

If <lease> isn't given as a command line argument and '--ignore-lease' is not specified,
this command tries to read the value from standard input.

For example,
$ cat file | put <key>
will store the content of the file to <key>.
";

/// Every runnable command (groups like `lease` are derived from paths).
pub const COMMANDS: &[Command] = &[
    cmd("get", "Gets the key or a range of keys", "[options] <key> [range_end]", &[
        flag("consistency", None, Str, "l", "Linearizable(l) or Serializable(s)"),
        hidden("count-only", Bool, "false"),
        flag("from-key", None, Bool, "false", "Get keys that are greater than or equal to the given key using byte compare"),
        flag("keys-only", None, Bool, "false", "Get only the keys"),
        flag("limit", None, Int, "0", "Maximum number of results"),
        hidden("max-create-rev", Int, "0"),
        hidden("max-mod-rev", Int, "0"),
        hidden("min-create-rev", Int, "0"),
        hidden("min-mod-rev", Int, "0"),
        flag("order", None, Str, "", "Order of results; ASCEND or DESCEND (ASCEND by default)"),
        flag("prefix", None, Bool, "false", "Get keys with matching prefix"),
        flag("print-value-only", None, Bool, "false", "Only write values when using the \"simple\" output format"),
        flag("rev", None, Int, "0", "Specify the kv revision"),
        flag("sort-by", None, Str, "", "Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION"),
    ]),
    Command {
        path: "put",
        short: "Puts the given key into the store",
        args: "[options] <key> <value> (<value> can also be given from stdin)",
        long: PUT_LONG,
        flags: &[
            flag("ignore-lease", None, Bool, "false", "updates the key using its current lease"),
            flag("ignore-value", None, Bool, "false", "updates the key using its current value"),
            flag("lease", None, Str, "0", "lease ID (in hexadecimal) to attach to the key"),
            flag("prev-kv", None, Bool, "false", "return the previous key-value pair before modification"),
        ],
    },
    cmd("del", "Removes the specified key or range of keys [key, range_end)", "[options] <key> [range_end]", &[
        flag("from-key", None, Bool, "false", "delete keys that are greater than or equal to the given key using byte compare"),
        flag("prefix", None, Bool, "false", "delete keys with matching prefix"),
        flag("prev-kv", None, Bool, "false", "return deleted key-value pairs"),
    ]),
    cmd("txn", "Txn processes all the requests in one transaction", "[options]", &[
        flag("interactive", Some('i'), Bool, "false", "Input transaction in interactive mode"),
    ]),
    cmd("compaction", "Compacts the event history in etcd", "[options] <revision>", &[
        flag("physical", None, Bool, "false", "'true' to wait for compaction to physically remove all old revisions"),
    ]),
    cmd("watch", "Watches events stream on keys or prefixes", "[options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]", &[
        flag("interactive", Some('i'), Bool, "false", "Interactive mode"),
        flag("prefix", None, Bool, "false", "Watch on a prefix if prefix is set"),
        flag("prev-kv", None, Bool, "false", "get the previous key-value pair before the event happens"),
        hidden("progress-notify", Bool, "false"),
        flag("rev", None, Int, "0", "Revision to start watching"),
    ]),
    cmd("lease grant", "Creates leases", "<ttl>", &[]),
    cmd("lease keep-alive", "Keeps leases alive (renew)", "[options] <leaseID>", &[
        flag("once", None, Bool, "false", "Resets the keep-alive time to its original value and exits immediately"),
    ]),
    cmd("lease list", "List all active leases", "", &[]),
    cmd("lease revoke", "Revokes leases", "<leaseID>", &[]),
    cmd("lease timetolive", "Get lease information", "<leaseID> [options]", &[
        flag("keys", None, Bool, "false", "Get keys attached to this lease"),
    ]),
    cmd("member add", "Adds a member into the cluster", "<memberName> [options]", &[
        flag("learner", None, Bool, "false", "indicates if the new member is raft learner"),
        flag("peer-urls", None, Str, "", "comma separated peer URLs for the new member."),
    ]),
    Command {
        path: "member list",
        short: "Lists all members in the cluster",
        args: "",
        long: "When --write-out is set to simple, this command prints out comma-separated member lists for each endpoint.\nThe items in the lists are ID, Status, Name, Peer Addrs, Client Addrs, Is Learner.\n",
        flags: &[],
    },
    Command {
        path: "member promote",
        short: "Promotes a non-voting member in the cluster",
        args: "<memberID>",
        long: "Promotes a non-voting learner member to a voting one in the cluster.\n",
        flags: &[],
    },
    cmd("member remove", "Removes a member from the cluster", "<memberID>", &[]),
    cmd("member update", "Updates a member in the cluster", "<memberID> [options]", &[
        flag("peer-urls", None, Str, "", "comma separated peer URLs for the updated member."),
    ]),
    cmd("endpoint hashkv", "Prints the KV history hash for each endpoint in --endpoints", "", &[
        flag("rev", None, Int, "0", "maximum revision to hash (default: all revisions)"),
    ]),
    cmd("endpoint health", "Checks the healthiness of endpoints specified in `--endpoints` flag", "", &[]),
    Command {
        path: "endpoint status",
        short: "Prints out the status of endpoints specified in `--endpoints` flag",
        args: "",
        long: "When --write-out is set to simple, this command prints out comma-separated status lists for each endpoint.\nThe items in the lists are endpoint, ID, version, db size, is leader, is learner, raft term, raft index, raft applied index, errors.\n",
        flags: &[],
    },
    cmd("alarm disarm", "Disarms all alarms", "", &[]),
    cmd("alarm list", "Lists all alarms", "", &[]),
    cmd("defrag", "Defragments the storage of the etcd members with given endpoints", "", &[
        flag("cluster", None, Bool, "false", "use all endpoints from the cluster member list"),
        flag("data-dir", None, Str, "", "Optional. If present, defragments a data directory not in use by etcd."),
    ]),
    cmd("snapshot save", "Stores an etcd node backend snapshot to a given file", "<filename>", &[]),
    cmd("version", "Prints the version of etcdctl", "", &[]),
    cmd("lock", "Acquires a named lock", "<lockname> [exec-command arg1 arg2 ...]", &[
        flag("ttl", None, Int, "10", "timeout for session"),
    ]),
    cmd("elect", "Observes and participates in leader election", "<election-name> [proposal]", &[
        flag("listen", Some('l'), Bool, "false", "observation mode"),
    ]),
    cmd("move-leader", "Transfers leadership to another etcd cluster member.", "<transferee-member-id>", &[]),
    // The rest in etcdctl's help order; `completion powershell` and
    // `migrate` answer "not supported by ferroctl yet" (docs/ctl.md).
    cmd("auth disable", "Disables authentication", "", &[]),
    cmd("auth enable", "Enables authentication", "", &[]),
    Command {
        path: "check datascale",
        short: "Check the memory usage of holding data for different workloads on a given server endpoint.",
        args: "[options]",
        long: "If no endpoint is provided, localhost will be used. If multiple endpoints are provided, first endpoint will be used.",
        flags: &[
            flag("auto-compact", None, Bool, "false", "Compact storage with last revision after test is finished."),
            flag("auto-defrag", None, Bool, "false", "Defragment storage after test is finished."),
            flag("load", None, Str, "s", "The datascale check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)"),
            flag("prefix", None, Str, "/etcdctl-check-datascale/", "The prefix for writing the datascale check's keys."),
        ],
    },
    cmd("check perf", "Check the performance of the etcd cluster", "[options]", &[
        flag("auto-compact", None, Bool, "false", "Compact storage with last revision after test is finished."),
        flag("auto-defrag", None, Bool, "false", "Defragment storage after test is finished."),
        flag("load", None, Str, "s", "The performance check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)"),
        flag("prefix", None, Str, "/etcdctl-check-perf/", "The prefix for writing the performance check's keys."),
    ]),
    cmd("completion bash", "Generate the autocompletion script for bash", "", &[]),
    cmd("completion fish", "Generate the autocompletion script for fish", "", &[]),
    cmd("completion powershell", "Generate the autocompletion script for powershell", "", &[]),
    cmd("completion zsh", "Generate the autocompletion script for zsh", "", &[]),
    cmd("help", "Help about any command", "", &[]),
    cmd("make-mirror", "Makes a mirror at the destination etcd cluster", "[options] <destination>", &[
        flag("dest-cacert", None, Str, "", "Verify certificates of TLS enabled secure servers using this CA bundle"),
        flag("dest-cert", None, Str, "", "Identify secure client using this TLS certificate file for the destination cluster"),
        flag("dest-insecure-transport", None, Bool, "true", "Disable transport security for client connections"),
        flag("dest-key", None, Str, "", "Identify secure client using this TLS key file"),
        flag("dest-prefix", None, Str, "", "destination prefix to mirror a prefix to a different prefix in the destination cluster"),
        flag("no-dest-prefix", None, Bool, "false", "mirror key-values to the root of the destination cluster"),
        flag("prefix", None, Str, "", "Key-value prefix to mirror"),
    ]),
    cmd("migrate", "Migrates keys in a v2 store to a mvcc store", "", &[]),
    cmd("role add", "Adds a new role", "<role name>", &[]),
    cmd("role delete", "Deletes a role", "<role name>", &[]),
    cmd("role get", "Gets detailed information of a role", "<role name>", &[]),
    cmd("role grant-permission", "Grants a key to a role", "[options] <role name> <permission type> <key> [endkey]", &[
        flag("from-key", None, Bool, "false", "grant a permission of keys that are greater than or equal to the given key using byte compare"),
        flag("prefix", None, Bool, "false", "grant a prefix permission"),
    ]),
    cmd("role list", "Lists all roles", "", &[]),
    cmd("role revoke-permission", "Revokes a key from a role", "<role name> <key> [endkey]", &[
        flag("from-key", None, Bool, "false", "revoke a permission of keys that are greater than or equal to the given key using byte compare"),
        flag("prefix", None, Bool, "false", "revoke a prefix permission"),
    ]),
    cmd("snapshot restore", "Restores an etcd member snapshot to an etcd directory", "<filename> [options]", &[
        flag("data-dir", None, Str, "", "Path to the data directory"),
        flag("initial-advertise-peer-urls", None, Str, "http://localhost:2380", "List of this member's peer URLs to advertise to the rest of the cluster"),
        flag("initial-cluster", None, Str, "default=http://localhost:2380", "Initial cluster configuration for restore bootstrap"),
        flag("initial-cluster-token", None, Str, "etcd-cluster", "Initial cluster token for the etcd cluster during restore bootstrap"),
        flag("name", None, Str, "default", "Human-readable name for this member"),
        hidden("shards", Str, ""),
        flag("skip-hash-check", None, Bool, "false", "Ignore snapshot integrity hash value (required if copied from data directory)"),
        flag("wal-dir", None, Str, "", "Path to the WAL directory (use --data-dir if none given)"),
    ]),
    Command {
        path: "snapshot status",
        short: "Gets backend snapshot status of a given file",
        args: "<filename>",
        long: "When --write-out is set to simple, this command prints out comma-separated status lists for each endpoint.\nThe items in the lists are hash, revision, total keys, total size.\n",
        flags: &[],
    },
    cmd("user add", "Adds a new user", "<user name or user:password> [options]", &[
        flag("interactive", None, Bool, "true", "Read password from stdin instead of interactive terminal"),
        flag("new-user-password", None, Str, "", "Supply password from the command line flag"),
        flag("no-password", None, Bool, "false", "Create a user without password (CN based auth only)"),
    ]),
    cmd("user delete", "Deletes a user", "<user name>", &[]),
    cmd("user get", "Gets detailed information of a user", "<user name> [options]", &[
        flag("detail", None, Bool, "false", "Show permissions of roles granted to the user"),
    ]),
    cmd("user grant-role", "Grants a role to a user", "<user name> <role name>", &[]),
    cmd("user list", "Lists all users", "", &[]),
    cmd("user passwd", "Changes password of user", "<user name> [options]", &[
        flag("interactive", None, Bool, "true", "If true, read password from stdin instead of interactive terminal"),
    ]),
    cmd("user revoke-role", "Revokes a role from a user", "<user name> <role name>", &[]),
];

/// `endpoint`'s persistent flag, inherited by its subcommands.
const ENDPOINT_CLUSTER: Flag = flag(
    "cluster",
    None,
    Bool,
    "false",
    "use all endpoints from the cluster member list",
);

/// A parsed command line.
#[derive(Debug)]
pub struct Invocation {
    pub command: &'static Command,
    /// Values given on the command line, by flag name (last one wins;
    /// slices accumulate, comma-joined).
    values: HashMap<&'static str, String>,
    pub args: Vec<String>,
    /// Arguments after a `--`, and where in `args` the `--` was.
    pub dash_at: Option<usize>,
}

/// What went wrong parsing the command line.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A flag error: cobra prints it, the command's usage, and exits 1.
    Flag { command: String, message: String },
    /// An unknown command: cobra's suggestion text, exit 1.
    UnknownCommand(String),
    /// Only a group (or nothing) was named: print its help, exit 0.
    Help(String),
}

impl Invocation {
    fn flag_spec(&self, name: &str) -> Option<&'static Flag> {
        find_flag(self.command, name)
    }

    /// Whether the flag was given on the command line.
    pub fn is_set(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The raw value: given, else from `ETCDCTL_<NAME>` for global flags,
    /// else the default.
    pub fn raw(&self, name: &str) -> String {
        if let Some(v) = self.values.get(name) {
            return v.clone();
        }
        let spec = self.flag_spec(name);
        if let Some(f) = spec.filter(|f| GLOBAL_FLAGS.iter().any(|g| g.name == f.name)) {
            // etcdctl takes a non-empty ETCDCTL_<NAME> and ignores a value
            // its flag would refuse (pkg/flags drops that error).
            if let Ok(v) = std::env::var(env_key(name)) {
                if !v.is_empty() && env_value_valid(f.kind, &v) {
                    return v;
                }
            }
        }
        match spec {
            Some(f) if f.kind == StrSlice => f.default.trim_matches(['[', ']']).to_string(),
            Some(f) => f.default.to_string(),
            None => String::new(),
        }
    }

    pub fn bool(&self, name: &str) -> bool {
        self.raw(name) == "true"
    }

    pub fn string(&self, name: &str) -> String {
        self.raw(name)
    }

    /// An already validated integer flag (`parse` checks every given one).
    pub fn int(&self, name: &str) -> i64 {
        self.raw(name).parse().unwrap_or(0)
    }

    pub fn list(&self, name: &str) -> Vec<String> {
        self.raw(name)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// A duration flag; environment values are checked here.
    pub fn duration(&self, name: &str) -> Result<std::time::Duration, String> {
        let raw = self.raw(name);
        crate::gofmt::parse_duration(&raw).map_err(|e| {
            format!(
                "invalid argument {} for \"--{name}\" flag: {e}",
                crate::gofmt::quote(raw.as_bytes())
            )
        })
    }
}

/// `ETCDCTL_<NAME>` of a global flag.
pub fn env_key(flag: &str) -> String {
    format!("ETCDCTL_{}", flag.to_uppercase().replace('-', "_"))
}

fn env_value_valid(kind: Kind, value: &str) -> bool {
    match kind {
        Bool => matches!(
            value,
            "1" | "t"
                | "T"
                | "true"
                | "TRUE"
                | "True"
                | "0"
                | "f"
                | "F"
                | "false"
                | "FALSE"
                | "False"
        ),
        Int => parse_go_int(value).is_ok(),
        Uint => value.parse::<u64>().is_ok(),
        Duration => crate::gofmt::parse_duration(value).is_ok(),
        Str | StrSlice => true,
    }
}

/// etcd's pkg/flags `verifyEnv` over `ETCDCTL_*`, run when etcdctl makes
/// its client: a variable shadowed by a flag given on the command line is
/// fatal, one that names no flag is warned about. Returns the capnslog
/// lines to print and whether to exit.
pub fn verify_env(inv: &Invocation, env: &[(String, String)]) -> (Vec<String>, bool) {
    let stamp = crate::gofmt::capnslog_timestamp(std::time::SystemTime::now());
    let mut lines = Vec::new();
    for (key, value) in env {
        if !key.starts_with("ETCDCTL_") || key == "ETCDCTL_API" {
            continue;
        }
        let flag = GLOBAL_FLAGS.iter().find(|f| env_key(f.name) == *key);
        let watch_var = inv.command.path == "watch"
            && (key == "ETCDCTL_WATCH_KEY" || key == "ETCDCTL_WATCH_RANGE_END");
        match flag {
            Some(f) if inv.is_set(f.name) => {
                lines.push(format!(
                    "{stamp} C | pkg/flags: conflicting environment variable \"{key}\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)"
                ));
                return (lines, true);
            }
            Some(_) if !value.is_empty() => {}
            _ if watch_var && !value.is_empty() => {}
            _ => lines.push(format!(
                "{stamp} W | pkg/flags: unrecognized environment variable {key}={value}"
            )),
        }
    }
    (lines, false)
}

fn find_flag(command: &Command, name: &str) -> Option<&'static Flag> {
    let local: &'static [Flag] = COMMANDS
        .iter()
        .find(|c| c.path == command.path)
        .map(|c| c.flags)
        .unwrap_or(&[]);
    local
        .iter()
        .chain(GLOBAL_FLAGS)
        .find(|f| f.name == name)
        .or_else(|| {
            (command.path.starts_with("endpoint ") && name == "cluster")
                .then_some(&ENDPOINT_CLUSTER)
        })
}

fn find_short(command: &Command, short: char) -> Option<&'static Flag> {
    let local: &'static [Flag] = COMMANDS
        .iter()
        .find(|c| c.path == command.path)
        .map(|c| c.flags)
        .unwrap_or(&[]);
    local
        .iter()
        .chain(GLOBAL_FLAGS)
        .find(|f| f.short == Some(short))
}

/// The group words (`lease`, `member`, ...) and single commands.
fn top_words() -> Vec<&'static str> {
    let mut words: Vec<&'static str> = COMMANDS
        .iter()
        .map(|c| c.path.split(' ').next().unwrap_or(c.path))
        .collect();
    words.dedup();
    words
}

/// Whether a global flag with this name takes a value (to skip it while
/// looking for the command words, as cobra's `stripFlags` does).
fn takes_value(arg: &str) -> bool {
    if arg.contains('=') {
        return false;
    }
    if let Some(name) = arg.strip_prefix("--") {
        return GLOBAL_FLAGS
            .iter()
            .any(|f| f.name == name && f.kind != Bool);
    }
    if let Some(short) = arg.strip_prefix('-') {
        return short.len() == 1
            && GLOBAL_FLAGS
                .iter()
                .any(|f| f.short.map(String::from).as_deref() == Some(short) && f.kind != Bool);
    }
    false
}

/// Finds the command named by the non-flag words at the front.
fn find_command(argv: &[String]) -> Result<(&'static Command, Vec<usize>), ParseError> {
    let mut words: Vec<(usize, &str)> = Vec::new();
    let mut i = 0;
    while i < argv.len() && words.len() < 2 {
        let a = argv[i].as_str();
        if a == "--" {
            break;
        }
        if a.starts_with('-') && a.len() > 1 {
            if takes_value(a) {
                i += 1;
            }
        } else {
            words.push((i, a));
        }
        i += 1;
    }
    let Some(&(first_at, first)) = words.first() else {
        return Err(ParseError::Help(String::new()));
    };
    if let Some(c) = COMMANDS.iter().find(|c| c.path == first) {
        return Ok((c, vec![first_at]));
    }
    if !top_words().contains(&first) {
        return Err(ParseError::UnknownCommand(first.to_string()));
    }
    if let Some(&(second_at, second)) = words.get(1) {
        let path = format!("{first} {second}");
        if let Some(c) = COMMANDS.iter().find(|c| c.path == path) {
            return Ok((c, vec![first_at, second_at]));
        }
    }
    Err(ParseError::Help(first.to_string()))
}

/// Parses etcdctl's argv (without the program name).
pub fn parse(argv: &[String]) -> Result<Invocation, ParseError> {
    let (command, word_positions) = find_command(argv)?;
    let mut inv = Invocation {
        command,
        values: HashMap::new(),
        args: Vec::new(),
        dash_at: None,
    };
    let flag_err = |message: String| ParseError::Flag {
        command: command.path.to_string(),
        message,
    };
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        i += 1;
        if word_positions.contains(&(i - 1)) {
            continue;
        }
        if inv.dash_at.is_some() {
            inv.args.push(a.clone());
            continue;
        }
        if a == "--" {
            inv.dash_at = Some(inv.args.len());
            continue;
        }
        if let Some(body) = a.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            if name == "help" {
                return Err(ParseError::Help(command.path.to_string()));
            }
            let Some(spec) = find_flag(command, name) else {
                return Err(flag_err(format!("unknown flag: --{name}")));
            };
            let value = match (inline, spec.kind) {
                (Some(v), _) => v,
                (None, Bool) => "true".to_string(),
                (None, _) => {
                    let Some(v) = argv.get(i) else {
                        return Err(flag_err(format!("flag needs an argument: --{name}")));
                    };
                    i += 1;
                    v.clone()
                }
            };
            set_value(&mut inv, spec, value, &format!("--{name}")).map_err(flag_err)?;
        } else if a.len() > 1 && a.starts_with('-') {
            let shorts: Vec<char> = a[1..].chars().collect();
            let mut k = 0;
            while k < shorts.len() {
                let c = shorts[k];
                if c == 'h' {
                    return Err(ParseError::Help(command.path.to_string()));
                }
                let Some(spec) = find_short(command, c) else {
                    return Err(flag_err(format!("unknown shorthand flag: '{c}' in {a}")));
                };
                let rest: String = shorts[k + 1..].iter().collect();
                if spec.kind == Bool {
                    let value = match rest.strip_prefix('=') {
                        Some(v) => {
                            k = shorts.len();
                            v.to_string()
                        }
                        None => "true".to_string(),
                    };
                    set_value(&mut inv, spec, value, &format!("-{c}")).map_err(flag_err)?;
                    k += 1;
                    continue;
                }
                let value = if !rest.is_empty() {
                    rest.strip_prefix('=').unwrap_or(&rest).to_string()
                } else if let Some(v) = argv.get(i) {
                    i += 1;
                    v.clone()
                } else {
                    return Err(flag_err(format!("flag needs an argument: '{c}' in {a}")));
                };
                set_value(&mut inv, spec, value, &format!("-{c}")).map_err(flag_err)?;
                break;
            }
        } else {
            inv.args.push(a.clone());
        }
    }
    Ok(inv)
}

fn set_value(
    inv: &mut Invocation,
    spec: &'static Flag,
    value: String,
    _as_written: &str,
) -> Result<(), String> {
    let invalid = |why: String| {
        format!(
            "invalid argument {} for \"{}\" flag: {why}",
            crate::gofmt::quote(value.as_bytes()),
            flag_label(spec)
        )
    };
    match spec.kind {
        Bool => {
            let v = match value.as_str() {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => "true",
                "0" | "f" | "F" | "false" | "FALSE" | "False" => "false",
                _ => {
                    return Err(invalid(format!(
                        "strconv.ParseBool: parsing {}: invalid syntax",
                        crate::gofmt::quote(value.as_bytes())
                    )))
                }
            };
            inv.values.insert(spec.name, v.to_string());
        }
        Int => {
            parse_go_int(&value).map_err(invalid)?;
            inv.values.insert(spec.name, value);
        }
        Uint => {
            value.parse::<u64>().map_err(|_| {
                invalid(format!(
                    "strconv.ParseUint: parsing {}: invalid syntax",
                    crate::gofmt::quote(value.as_bytes())
                ))
            })?;
            inv.values.insert(spec.name, value);
        }
        Duration => {
            crate::gofmt::parse_duration(&value).map_err(invalid)?;
            inv.values.insert(spec.name, value);
        }
        Str => {
            inv.values.insert(spec.name, value);
        }
        StrSlice => {
            let joined = match inv.values.get(spec.name) {
                Some(prev) => format!("{prev},{value}"),
                None => value,
            };
            inv.values.insert(spec.name, joined);
        }
    }
    Ok(())
}

/// pflag names a flag in errors as `--name`, or `-s, --name` with a
/// shorthand.
fn flag_label(spec: &Flag) -> String {
    match spec.short {
        Some(s) => format!("-{s}, --{}", spec.name),
        None => format!("--{}", spec.name),
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)` as pflag's int flags use it.
pub fn parse_go_int(text: &str) -> Result<i64, String> {
    let invalid = |what: &str| {
        format!(
            "strconv.ParseInt: parsing {}: {what}",
            crate::gofmt::quote(text.as_bytes())
        )
    };
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (radix, digits) =
        if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
            (16, h)
        } else if let Some(b) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
            (2, b)
        } else if let Some(o) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
            (8, o)
        } else if body.len() > 1 && body.starts_with('0') {
            (8, &body[1..])
        } else {
            (10, body)
        };
    let digits = digits.replace('_', "");
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return Err(invalid("invalid syntax"));
    }
    let magnitude = u64::from_str_radix(&digits, radix).map_err(|e| {
        if matches!(e.kind(), std::num::IntErrorKind::PosOverflow) {
            invalid("value out of range")
        } else {
            invalid("invalid syntax")
        }
    })?;
    if neg {
        if magnitude > 1 << 63 {
            return Err(invalid("value out of range"));
        }
        Ok((magnitude as i64).wrapping_neg())
    } else {
        i64::try_from(magnitude).map_err(|_| invalid("value out of range"))
    }
}

/// pflag's line for one flag, before tab alignment.
fn flag_line(f: &Flag) -> String {
    let mut line = match f.short {
        Some(s) => format!("  -{s}, --{}", f.name),
        None => format!("      --{}", f.name),
    };
    let bracket = f.kind == Bool;
    if bracket {
        line.push('[');
    }
    if f.kind == Str {
        line.push_str(&format!("={}", crate::gofmt::quote(f.default.as_bytes())));
    } else {
        line.push_str(&format!("={}", f.default));
    }
    if bracket {
        line.push(']');
    }
    line.push('\t');
    line.push_str(f.usage);
    line.push('\n');
    line
}

/// Whether `path` names a command or a group of commands.
pub fn is_known_path(path: &str) -> bool {
    path.is_empty()
        || COMMANDS
            .iter()
            .any(|c| c.path == path || c.path.starts_with(&format!("{path} ")))
}

/// etcdctl's usage text of a command (or of a group / the root when
/// `path` names no runnable command).
pub fn usage(path: &str) -> String {
    let mut text = String::new();
    let command = COMMANDS.iter().find(|c| c.path == path);
    let mut subcommands: Vec<&Command> = COMMANDS
        .iter()
        .filter(|c| path.is_empty() || c.path.starts_with(&format!("{path} ")))
        .collect();
    subcommands.sort_by_key(|c| c.path);
    text.push_str("NAME:\n");
    match command {
        Some(c) => text.push_str(&format!("\t{} - {}\n", c.path, c.short)),
        None if path.is_empty() => {
            text.push_str("\tetcdctl - A simple command line client for etcd3.\n")
        }
        None => text.push_str(&format!("\t{path} - {}\n", group_short(path))),
    }
    text.push_str("\nUSAGE:\n");
    match command {
        Some(c) if c.args.is_empty() => text.push_str(&format!("\tetcdctl {} [flags]\n", c.path)),
        Some(c) => text.push_str(&format!("\tetcdctl {} {} [flags]\n", c.path, c.args)),
        None if path.is_empty() => text.push_str("\tetcdctl [flags]\n"),
        None if path == "auth" => text.push_str("\tetcdctl auth <enable or disable> [flags]\n"),
        None => text.push_str(&format!("\tetcdctl {path} <subcommand> [flags]\n")),
    }
    if path.is_empty() {
        text.push_str(&format!("\nVERSION:\n\t{}\n", crate::VERSION));
    }
    if command.is_none() {
        text.push_str(&format!("\nAPI VERSION:\n\t{}\n", crate::API_VERSION));
        text.push_str("\n\nCOMMANDS:\n");
        for c in &subcommands {
            let name = if path.is_empty() {
                c.path.to_string()
            } else {
                c.path[path.len() + 1..].to_string()
            };
            text.push_str(&format!("\t{name}\t{}\n", c.short));
        }
    }
    if let Some(c) = command {
        if !c.long.is_empty() {
            text.push_str("\nDESCRIPTION:\n");
            for line in c.long.trim_matches('\n').split('\n') {
                text.push_str(&format!("\t{line}\n"));
            }
        }
    }
    text.push_str("\nOPTIONS:\n");
    let mut locals: Vec<Flag> = command
        .map(|c| c.flags.iter().filter(|f| !f.hidden).copied().collect())
        .unwrap_or_default();
    let help_for = if path.is_empty() {
        "etcdctl".to_string()
    } else {
        path.rsplit(' ').next().unwrap_or(path).to_string()
    };
    let help = Flag {
        name: "help",
        short: Some('h'),
        kind: Bool,
        default: "false",
        usage: "",
        hidden: false,
    };
    let help_usage = format!("help for {help_for}");
    if path.is_empty() {
        locals.extend(GLOBAL_FLAGS.iter().copied());
    }
    if path == "endpoint" {
        locals.push(ENDPOINT_CLUSTER);
    }
    locals.push(help);
    locals.sort_by_key(|f| f.name);
    for f in &locals {
        if f.name == "help" {
            text.push_str(
                &flag_line(&Flag { usage: "", ..*f }).replace("\t\n", &format!("\t{help_usage}\n")),
            );
        } else {
            text.push_str(&flag_line(f));
        }
    }
    if !path.is_empty() {
        text.push_str("\nGLOBAL OPTIONS:\n");
        let mut globals: Vec<Flag> = GLOBAL_FLAGS.to_vec();
        if path.starts_with("endpoint ") {
            globals.push(ENDPOINT_CLUSTER);
            globals.sort_by_key(|f| f.name);
        }
        for f in &globals {
            text.push_str(&flag_line(f));
        }
    }
    text.push('\n');
    tabwrite(&text)
}

fn group_short(group: &str) -> &'static str {
    match group {
        "lease" => "Lease related commands",
        "member" => "Membership related commands",
        "endpoint" => "Endpoint related commands",
        "alarm" => "Alarm related commands",
        "snapshot" => "Manages etcd node snapshots",
        "user" => "User related commands",
        "role" => "Role related commands",
        "auth" => "Enable or disable authentication",
        "check" => "commands for checking properties of the etcd cluster",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn finds_commands_past_global_flags() {
        let inv = parse(&args("--endpoints x:1 -w json get foo --prefix")).unwrap();
        assert_eq!(inv.command.path, "get");
        assert_eq!(inv.args, vec!["foo"]);
        assert!(inv.bool("prefix"));
        assert_eq!(inv.string("write-out"), "json");
        assert_eq!(inv.list("endpoints"), vec!["x:1"]);
        let inv = parse(&args("lease grant 10")).unwrap();
        assert_eq!(inv.command.path, "lease grant");
        assert_eq!(inv.args, vec!["10"]);
    }

    #[test]
    fn flag_errors_use_pflag_words() {
        let err = |s: &str| match parse(&args(s)) {
            Err(ParseError::Flag { message, .. }) => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(err("get foo --bogus"), "unknown flag: --bogus");
        assert_eq!(err("get foo -x"), "unknown shorthand flag: 'x' in -x");
        assert_eq!(err("get foo --limit"), "flag needs an argument: --limit");
        assert_eq!(err("get foo -w"), "flag needs an argument: 'w' in -w");
        assert_eq!(
            err("get foo --limit abc"),
            "invalid argument \"abc\" for \"--limit\" flag: strconv.ParseInt: parsing \"abc\": invalid syntax"
        );
        assert_eq!(
            err("--command-timeout=abc get foo"),
            "invalid argument \"abc\" for \"--command-timeout\" flag: time: invalid duration \"abc\""
        );
        assert_eq!(
            parse(&args("bogus")).unwrap_err(),
            ParseError::UnknownCommand("bogus".into())
        );
        assert_eq!(
            parse(&args("lease")).unwrap_err(),
            ParseError::Help("lease".into())
        );
    }

    #[test]
    fn dash_dash_ends_flags() {
        let inv = parse(&args("watch foo -- echo -n hi")).unwrap();
        assert_eq!(inv.args, vec!["foo", "echo", "-n", "hi"]);
        assert_eq!(inv.dash_at, Some(1));
        let inv = parse(&args("put -- k -v")).unwrap();
        assert_eq!(inv.args, vec!["k", "-v"]);
    }

    #[test]
    fn env_shadowed_by_a_flag_is_fatal_and_unknown_ones_warned() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let inv = parse(&args("--endpoints=x:1 get foo")).unwrap();
        let (lines, fatal) = verify_env(&inv, &env(&[("ETCDCTL_ENDPOINTS", "y:2")]));
        assert!(fatal);
        assert!(lines[0].ends_with("C | pkg/flags: conflicting environment variable \"ETCDCTL_ENDPOINTS\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)"));
        let inv = parse(&args("get foo")).unwrap();
        let (lines, fatal) = verify_env(
            &inv,
            &env(&[
                ("ETCDCTL_BOGUS", "1"),
                ("ETCDCTL_HEX", "true"),
                ("ETCDCTL_API", "3"),
                ("PATH", "/bin"),
            ]),
        );
        assert!(!fatal);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].ends_with("W | pkg/flags: unrecognized environment variable ETCDCTL_BOGUS=1")
        );
    }

    #[test]
    fn go_ints() {
        assert_eq!(parse_go_int("10"), Ok(10));
        assert_eq!(parse_go_int("-1"), Ok(-1));
        assert_eq!(parse_go_int("0x10"), Ok(16));
        assert!(parse_go_int("1x").is_err());
    }

    #[test]
    fn usage_aligns_options_like_etcdctl() {
        let u = usage("get");
        assert!(u.starts_with("NAME:\n\tget - Gets the key or a range of keys\n\nUSAGE:\n\tetcdctl get [options] <key> [range_end] [flags]\n\nOPTIONS:\n      --consistency=\"l\"\t\t\tLinearizable(l) or Serializable(s)\n"), "{u}");
        assert!(u.contains("      --limit=0\t\t\t\tMaximum number of results\n"));
        assert!(u.contains("  -w, --write-out=\"simple\"\t\t\tset the output format (fields, json, protobuf, simple, table)\n\n"));
        assert!(!u.contains("count-only"));
    }
}

/// Command-line words are byte strings (a key may be any bytes), but the
/// parser works on `String`s: a byte that is not UTF-8 is carried as the
/// private-use char U+10FF00+byte and turned back by [`arg_bytes`].
const RAW_BYTE_BASE: u32 = 0x10_ff00;

pub fn arg_from_os(arg: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for chunk in arg.as_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push(char::from_u32(RAW_BYTE_BASE + u32::from(*b)).unwrap_or('\u{fffd}'));
        }
    }
    out
}

/// The bytes a word stood for on the command line.
pub fn arg_bytes(arg: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(arg.len());
    for c in arg.chars() {
        let u = c as u32;
        if (RAW_BYTE_BASE..RAW_BYTE_BASE + 0x100).contains(&u) {
            out.push((u - RAW_BYTE_BASE) as u8);
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod raw_arg_tests {
    use super::*;

    #[test]
    fn non_utf8_words_round_trip() {
        use std::os::unix::ffi::OsStrExt;
        let raw: &[u8] = b"a\xff\x01\xe2\x80\xa8z";
        let s = arg_from_os(std::ffi::OsStr::from_bytes(raw));
        assert_eq!(arg_bytes(&s), raw);
    }
}
