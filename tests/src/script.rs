//! Data-driven etcdctl compatibility scripts (`tests/testdata/compat/*.txt`).
//!
//! A script is run step by step against a fresh real etcd (the reference)
//! and a fresh ferrokv (the candidate); after normalization every step must
//! print the same stdout and stderr and exit with the same code.
//!
//! # Script format
//!
//! ```text
//! # A comment. Blank lines are ignored.
//! !normalize-json dbSize raftIndex      # also replace these keys' values
//! put foo bar                           # etcdctl arguments, shell-like quoting
//! put "" x                              # "" is an empty argument
//! put big <stdin:repeat:x:1700000>      # stdin = "x" repeated 1700000 times
//! put bin <stdin:repeat:\xff\n:2>       # escapes: \n \t \\ \xNN
//! txn -w json <<EOF                     # stdin = the lines up to "EOF"
//! value("foo") = "bar"
//!
//! put foo baz
//!
//! EOF
//! ```
//!
//! Inside a `<<WORD` block every line is passed verbatim, except
//! `!repeat N TEXT`, which stands for N lines of TEXT with `{i}` replaced by
//! 0, 1, ..., N-1 (e.g. a transaction with 129 operations).
//!
//! Commands that never exit on their own (`watch`) run in the background:
//!
//! ```text
//! !bg w1 watch --prefix foo        # start etcdctl watch, wait until it is set up
//! put foo/a 1                      # later steps run while it watches
//! !stop w1                         # once it is quiet, kill it; compare its output
//! ```
//!
//! `!bg` waits `BACKGROUND_SETTLE` after starting, so that a watch without
//! `--rev` is in place before the next step writes; `!stop` waits until the
//! command printed nothing for `BACKGROUND_QUIET` (at most
//! `BACKGROUND_STOP_TIMEOUT`), then kills it. The `!bg` step itself prints
//! nothing; the `!stop` step has the command's stdout, stderr and exit code
//! (-1 when it had to be killed). Every `!bg` must be stopped in the script.
//!
//! Values a server chooses (a lease id) are captured and reused:
//!
//! ```text
//! lease grant 60                   # prints "lease 694d7a4f0e1b2c0d granted with TTL(60s)"
//! !capture L lease                 # $L = the word after "lease " in that stdout
//! put --lease=$L foo bar           # $L is substituted in later arguments
//! ```
//!
//! `!capture NAME WORD` applies to the step just before it: the value is the
//! whitespace-delimited word after the first `WORD ` in its stdout. In that
//! step's and all later outputs the value (and, when it is hex, its decimal
//! form, as `-w json` prints ids) is replaced by `$NAME` before comparing,
//! so two servers that chose different ids compare equal.
//!
//! Only `!normalize-json` and `!capture` change what is compared; a script using it must say
//! in its header why each key legitimately differs between servers.

use std::fmt::Write as _;
use std::path::Path;

use crate::diff::{line_diff, shorten};
use crate::etcdctl::{ctl_with_timeout, Background, Output};
use crate::normalize::Normalizer;
use crate::server::{EtcdProcess, FerrokvProcess, ServerOptions, ServerProcess};

/// Upper bound on generated stdin (`<stdin:repeat:..>`, `!repeat`), so a typo
/// cannot make the runner allocate gigabytes.
const GENERATED_STDIN_BYTES_MAX: usize = 16 << 20;
/// Upper bound on steps per script: each step is one etcdctl process.
const SCRIPT_STEPS_MAX: usize = 500;
/// Mismatching steps shown in full in a failure report.
const MISMATCHES_SHOWN_MAX: usize = 5;
/// How long `!bg` waits after starting its command (connect and set up).
const BACKGROUND_SETTLE: std::time::Duration = std::time::Duration::from_millis(1000);
/// `!stop` kills its command once it printed nothing for this long.
const BACKGROUND_QUIET: std::time::Duration = std::time::Duration::from_millis(700);
/// Upper bound on one `!stop`.
const BACKGROUND_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// `--name` of both compared servers, so that `member list` can match.
const COMPAT_MEMBER_NAME: &str = "compat";

/// One etcdctl invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// 1-based line of the command in the script file.
    pub line: usize,
    /// The command line as written (without any stdin block).
    pub text: String,
    pub args: Vec<String>,
    pub stdin: Option<Vec<u8>>,
    pub kind: StepKind,
    /// `!capture` directives that follow this step.
    pub captures: Vec<Capture>,
}

/// `!capture NAME WORD`: take the word after `WORD ` in the step's stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    pub name: String,
    pub after: String,
}

/// What a step does with its etcdctl command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StepKind {
    /// Run it to completion (bounded) and compare its output.
    #[default]
    Run,
    /// `!bg NAME ...`: start it in the background.
    Start(String),
    /// `!stop NAME`: stop the background command NAME, compare its output.
    Stop(String),
}

/// A parsed compat script.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Script {
    pub name: String,
    pub steps: Vec<Step>,
    /// Keys added to the normalizer by `!normalize-json`.
    pub normalize_keys: Vec<String>,
}

/// Parses a script; errors name the line.
pub fn parse_script(name: &str, text: &str) -> Result<Script, String> {
    let mut script = Script {
        name: name.to_string(),
        ..Script::default()
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut background: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        let line = lines[i].trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |msg: String| format!("{name}:{line_no}: {msg}");
        let mut tokens = tokenize(line).map_err(err)?;
        if tokens.first().map(|t| t.text.as_str()) == Some("!normalize-json") && !tokens[0].quoted {
            if tokens.len() < 2 {
                return Err(err("!normalize-json needs at least one key".into()));
            }
            script
                .normalize_keys
                .extend(tokens.into_iter().skip(1).map(|t| t.text));
            continue;
        }
        if tokens.first().map(|t| t.text.as_str()) == Some("!capture") && !tokens[0].quoted {
            let [_, name, after] = &tokens[..] else {
                return Err(err("usage: !capture NAME WORD".into()));
            };
            let name = name.text.clone();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(err(format!("capture name {name:?} is not [A-Za-z0-9_]+")));
            }
            if script
                .steps
                .iter()
                .flat_map(|s| &s.captures)
                .any(|c| c.name == name)
            {
                return Err(err(format!("capture {name:?} is defined twice")));
            }
            let Some(prev) = script.steps.last_mut().filter(|s| s.kind == StepKind::Run) else {
                return Err(err(
                    "!capture must follow a step that runs to completion".into()
                ));
            };
            prev.captures.push(Capture {
                name,
                after: after.text.clone(),
            });
            continue;
        }
        let mut kind = StepKind::Run;
        if !tokens.is_empty() && !tokens[0].quoted {
            match tokens[0].text.as_str() {
                "!bg" | "!stop" => {
                    let Some(name) = tokens.get(1).map(|t| t.text.clone()) else {
                        return Err(err(format!("{} needs a name", tokens[0].text)));
                    };
                    let running = background.contains(&name);
                    if tokens[0].text == "!bg" {
                        if running {
                            return Err(err(format!("background {name:?} is already running")));
                        }
                        background.push(name.clone());
                        kind = StepKind::Start(name);
                    } else {
                        if !running || tokens.len() != 2 {
                            return Err(err(format!(
                                "`!stop {name}`: no such background command, or extra arguments"
                            )));
                        }
                        background.retain(|n| *n != name);
                        kind = StepKind::Stop(name);
                    }
                    tokens.drain(..2);
                }
                _ => {}
            }
        }
        if line.starts_with('!') && kind == StepKind::Run {
            return Err(err(format!("unknown directive {line:?}")));
        }

        let mut stdin = None;
        // `<<WORD` as the last token opens a stdin block.
        if let Some(last) = tokens.last() {
            if !last.quoted && last.text.starts_with("<<") {
                let end = last.text[2..].to_string();
                if end.is_empty() {
                    return Err(err("`<<` needs an end marker, e.g. <<EOF".into()));
                }
                tokens.pop();
                let mut block = String::new();
                let mut closed = false;
                while i < lines.len() {
                    let body = lines[i];
                    i += 1;
                    if body.trim_end() == end {
                        closed = true;
                        break;
                    }
                    expand_block_line(body, &mut block).map_err(|m| format!("{name}:{i}: {m}"))?;
                }
                if !closed {
                    return Err(err(format!("stdin block is not closed by {end:?}")));
                }
                stdin = Some(block.into_bytes());
            }
        }
        let mut args = Vec::new();
        for token in tokens {
            if !token.quoted && token.text.starts_with("<stdin:") {
                if stdin.is_some() {
                    return Err(err("two stdin sources on one step".into()));
                }
                stdin = Some(parse_stdin_directive(&token.text).map_err(err)?);
            } else {
                args.push(token.text);
            }
        }
        if args.is_empty() && !matches!(kind, StepKind::Stop(_)) {
            return Err(err("no etcdctl arguments".into()));
        }
        if stdin.is_some() && kind != StepKind::Run {
            return Err(err("a background command takes no stdin".into()));
        }
        if script.steps.len() == SCRIPT_STEPS_MAX {
            return Err(err(format!("more than {SCRIPT_STEPS_MAX} steps")));
        }
        script.steps.push(Step {
            line: line_no,
            text: line.to_string(),
            args,
            stdin,
            kind,
            captures: Vec::new(),
        });
    }
    if script.steps.is_empty() {
        return Err(format!("{name}: no steps"));
    }
    if !background.is_empty() {
        return Err(format!(
            "{name}: background commands never stopped: {background:?}"
        ));
    }
    Ok(script)
}

/// Appends one stdin-block line (or its `!repeat` expansion) to `block`.
fn expand_block_line(line: &str, block: &mut String) -> Result<(), String> {
    let Some(rest) = line.strip_prefix("!repeat ") else {
        block.push_str(line);
        block.push('\n');
        return Ok(());
    };
    let (count, text) = rest
        .split_once(' ')
        .ok_or("!repeat needs a count and a text")?;
    let count: usize = count
        .parse()
        .map_err(|_| format!("!repeat count {count:?} is not a number"))?;
    for n in 0..count {
        block.push_str(&text.replace("{i}", &n.to_string()));
        block.push('\n');
        if block.len() > GENERATED_STDIN_BYTES_MAX {
            return Err(format!("stdin over {GENERATED_STDIN_BYTES_MAX} bytes"));
        }
    }
    Ok(())
}

/// `<stdin:repeat:TEXT:N>` → TEXT repeated N times (no trailing newline).
fn parse_stdin_directive(token: &str) -> Result<Vec<u8>, String> {
    let inner = token
        .strip_prefix("<stdin:")
        .and_then(|t| t.strip_suffix('>'))
        .ok_or_else(|| format!("malformed stdin directive {token:?}"))?;
    let spec = inner
        .strip_prefix("repeat:")
        .ok_or_else(|| format!("unknown stdin directive {token:?} (known: repeat)"))?;
    let (text, count) = spec
        .rsplit_once(':')
        .ok_or_else(|| format!("{token:?}: expected <stdin:repeat:TEXT:N>"))?;
    let count: usize = count
        .parse()
        .map_err(|_| format!("{token:?}: {count:?} is not a number"))?;
    let unit = unescape(text).map_err(|e| format!("{token:?}: {e}"))?;
    if unit.is_empty() || unit.len().saturating_mul(count) > GENERATED_STDIN_BYTES_MAX {
        return Err(format!(
            "{token:?}: stdin must be 1..={GENERATED_STDIN_BYTES_MAX} bytes"
        ));
    }
    Ok(unit.repeat(count))
}

/// `\n`, `\t`, `\\` and `\xNN` escapes (any byte, also non-UTF-8) in a
/// `<stdin:...>` text, which cannot contain whitespace or raw bytes.
fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let hex = std::str::from_utf8(&hex).map_err(|_| "bad \\x escape")?;
                let byte =
                    u8::from_str_radix(hex, 16).map_err(|_| format!("bad \\x escape {hex:?}"))?;
                out.push(byte);
            }
            other => return Err(format!("unknown escape \\{:?}", other.map(char::from))),
        }
    }
    Ok(out)
}

struct Token {
    text: String,
    /// Any part was quoted: then it is never a directive.
    quoted: bool,
}

/// Shell-like splitting: whitespace separates, `"..."` (with `\"` and `\\`
/// escapes) and `'...'` quote; `#` after whitespace starts a comment.
fn tokenize(line: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None | Some('#') => return Ok(tokens),
            _ => {}
        }
        let mut text = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '"' => {
                    quoted = true;
                    loop {
                        match chars.next() {
                            None => return Err("unclosed \"".into()),
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some(e @ ('"' | '\\')) => text.push(e),
                                Some(other) => {
                                    text.push('\\');
                                    text.push(other);
                                }
                                None => return Err("unclosed \"".into()),
                            },
                            Some(other) => text.push(other),
                        }
                    }
                }
                '\'' => {
                    quoted = true;
                    loop {
                        match chars.next() {
                            None => return Err("unclosed '".into()),
                            Some('\'') => break,
                            Some(other) => text.push(other),
                        }
                    }
                }
                other => text.push(other),
            }
        }
        tokens.push(Token { text, quoted });
    }
}

/// Runs every step against `server`, returning normalized outputs.
pub fn run_script(script: &Script, server: &ServerProcess, normalizer: &Normalizer) -> Vec<Output> {
    run_script_with(script, server, normalizer, &crate::etcdctl_bin(), &[])
}

/// [`run_script`] with another etcdctl-compatible client binary, and
/// variables set before the first step (`$NAME` substituted in arguments
/// and hidden in outputs, as `!capture` values are).
pub fn run_script_with(
    script: &Script,
    server: &ServerProcess,
    normalizer: &Normalizer,
    client: &Path,
    preset: &[(String, String)],
) -> Vec<Output> {
    let endpoint = server.endpoint();
    // Killed on drop if a step panics.
    let mut background: std::collections::HashMap<String, Background> = Default::default();
    let mut captured = Captured {
        vars: preset.to_vec(),
    };
    script
        .steps
        .iter()
        .map(|step| {
            let args = captured.substitute(&step.args);
            let raw = match &step.kind {
                StepKind::Run => ctl_with_timeout(
                    client,
                    &endpoint,
                    &args,
                    step.stdin.as_deref(),
                    crate::etcdctl::ETCDCTL_TIMEOUT,
                ),
                StepKind::Start(name) => {
                    background.insert(
                        name.clone(),
                        Background::start_with(client, &endpoint, &args),
                    );
                    std::thread::sleep(BACKGROUND_SETTLE);
                    Output {
                        stdout: String::new(),
                        stderr: String::new(),
                        code: 0,
                    }
                }
                StepKind::Stop(name) => background
                    .remove(name)
                    .expect("parse_script checks every !stop")
                    .stop(BACKGROUND_QUIET, BACKGROUND_STOP_TIMEOUT),
            };
            for c in &step.captures {
                captured.capture(c, &raw.stdout);
            }
            normalizer.normalize_output(&captured.hide(&raw))
        })
        .collect()
}

/// The values `!capture` took in one run.
#[derive(Default)]
struct Captured {
    /// (name, value)
    vars: Vec<(String, String)>,
}

impl Captured {
    fn capture(&mut self, c: &Capture, stdout: &str) {
        let needle = format!("{} ", c.after);
        let value = stdout
            .find(&needle)
            .and_then(|at| stdout[at + needle.len()..].split_whitespace().next())
            .unwrap_or("");
        if !value.is_empty() {
            self.vars.push((c.name.clone(), value.to_string()));
        }
    }

    /// `$NAME` -> value in every argument (longer names first).
    fn substitute(&self, args: &[String]) -> Vec<String> {
        let mut vars: Vec<&(String, String)> = self.vars.iter().collect();
        vars.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        args.iter()
            .map(|a| {
                let mut a = a.clone();
                for (name, value) in &vars {
                    a = a.replace(&format!("${name}"), value);
                }
                a
            })
            .collect()
    }

    /// Every captured value (and a hex value's decimal form) -> `$NAME`.
    fn hide(&self, out: &Output) -> Output {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in &self.vars {
            pairs.push((value.clone(), format!("${name}")));
            if let Ok(n) = u64::from_str_radix(value, 16) {
                pairs.push((n.to_string(), format!("${name}")));
            }
        }
        pairs.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        let hide = |text: &str| {
            let mut t = text.to_string();
            for (v, n) in &pairs {
                t = t.replace(v.as_str(), n);
            }
            t
        };
        Output {
            stdout: hide(&out.stdout),
            stderr: hide(&out.stderr),
            code: out.code,
        }
    }
}

/// Compares two runs of `script` step by step; `Err` is a readable report.
pub fn compare_runs(
    script: &Script,
    reference: (&str, &[Output]),
    candidate: (&str, &[Output]),
) -> Result<(), String> {
    let steps: Vec<StepName> = script
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| StepName {
            short: format!("{}@line{}", i + 1, step.line),
            heading: format!("step {} (line {}): etcdctl {}", i + 1, step.line, step.text),
        })
        .collect();
    compare_steps(
        &format!("compat script {}", script.name),
        &steps,
        reference,
        candidate,
    )
}

/// How a compared step is named in a report: in the list of differing
/// steps, and above its outputs.
#[derive(Clone, Debug)]
pub struct StepName {
    pub short: String,
    pub heading: String,
}

/// Compares the outputs of the same steps run against two servers;
/// `Err` is a readable report naming `what` was compared, the differing
/// steps, and (for the first few) both outputs as a line diff.
pub fn compare_steps(
    what: &str,
    steps: &[StepName],
    reference: (&str, &[Output]),
    candidate: (&str, &[Output]),
) -> Result<(), String> {
    let (ref_name, ref_out) = reference;
    let (cand_name, cand_out) = candidate;
    assert_eq!(ref_out.len(), steps.len());
    assert_eq!(cand_out.len(), steps.len());
    let mismatches: Vec<usize> = (0..steps.len())
        .filter(|&i| ref_out[i] != cand_out[i])
        .collect();
    if mismatches.is_empty() {
        return Ok(());
    }
    let mut report = format!(
        "{what}: {} of {} steps differ between {ref_name} (reference, `-`) and \
         {cand_name} (`+`); steps: {}\n",
        mismatches.len(),
        steps.len(),
        mismatches
            .iter()
            .map(|&i| steps[i].short.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for &i in mismatches.iter().take(MISMATCHES_SHOWN_MAX) {
        let (a, b) = (&ref_out[i], &cand_out[i]);
        let _ = writeln!(report, "\n=== {}", steps[i].heading);
        if a.code != b.code {
            let _ = writeln!(
                report,
                "exit code: {ref_name} {}, {cand_name} {}",
                a.code, b.code
            );
        } else {
            let _ = writeln!(report, "exit code: {} (both)", a.code);
        }
        for (label, x, y) in [
            ("stdout", &a.stdout, &b.stdout),
            ("stderr", &a.stderr, &b.stderr),
        ] {
            if x == y {
                let _ = write!(report, "{label} (same):\n{}", shorten(x));
            } else {
                let _ = write!(report, "{label} (differs):\n{}", line_diff(x, y));
            }
        }
    }
    if mismatches.len() > MISMATCHES_SHOWN_MAX {
        let _ = writeln!(
            report,
            "\n... {} more differing steps not shown",
            mismatches.len() - MISMATCHES_SHOWN_MAX
        );
    }
    Err(report)
}

/// Which server the compat tests (and the cluster tests) compare against
/// etcd.
///
/// `FERROKV_COMPAT_CANDIDATE=etcd` compares etcd with a second etcd: that is
/// how a new script (or test) is checked for output that is not
/// deterministic even between two etcd instances. The suite itself never
/// sets it.
pub fn candidate_is_etcd() -> bool {
    match std::env::var("FERROKV_COMPAT_CANDIDATE").as_deref() {
        Err(_) | Ok("") | Ok("ferrokv") => false,
        Ok("etcd") => true,
        Ok(other) => panic!("FERROKV_COMPAT_CANDIDATE={other:?}: expected ferrokv or etcd"),
    }
}

/// Runs one script file against a fresh etcd and a fresh ferrokv (with
/// `--shards N` if given) and panics with a step-by-step report if any step
/// differs.
pub fn run_compat_file(path: &Path, candidate_shards: Option<u32>) {
    run_compat_file_with(path, candidate_shards, Vec::new());
}

/// [`run_compat_file`] with `server_args` given to both servers.
pub fn run_compat_file_with(path: &Path, candidate_shards: Option<u32>, server_args: Vec<String>) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let script = parse_script(&name, &text).unwrap_or_else(|e| panic!("{e}"));

    let dir = tempfile::Builder::new()
        .prefix("ferrokv-compat-")
        .tempdir()
        .expect("create tempdir");
    let options = ServerOptions {
        name: Some(COMPAT_MEMBER_NAME.to_string()),
        extra_args: server_args,
        ..ServerOptions::default()
    };
    // Both servers run for the whole test; both are killed on drop (also
    // when a step panics) before the tempdir is removed.
    let reference = EtcdProcess::start_with(dir.path(), options.clone()).into_inner();
    let candidate = if candidate_is_etcd() {
        eprintln!("FERROKV_COMPAT_CANDIDATE=etcd: comparing etcd with etcd, not ferrokv");
        EtcdProcess::start_with(dir.path(), options).into_inner()
    } else {
        FerrokvProcess::start_with(
            dir.path(),
            ServerOptions {
                shards: candidate_shards,
                ..options
            },
        )
        .into_inner()
    };

    let mut ref_norm = Normalizer::for_server(&reference);
    ref_norm.add_keys(&script.normalize_keys);
    let mut cand_norm = Normalizer::for_server(&candidate);
    cand_norm.add_keys(&script.normalize_keys);

    let ref_out = run_script(&script, &reference, &ref_norm);
    if std::env::var_os("FERROKV_COMPAT_SHOW").is_some() {
        print_transcript(&script, &ref_out);
    }
    let cand_out = run_script(&script, &candidate, &cand_norm);
    let ref_label = format!("{}", reference.kind());
    let cand_label = if candidate.kind() == reference.kind() {
        format!("{} (second instance)", candidate.kind())
    } else {
        format!("{}", candidate.kind())
    };
    if let Err(report) = compare_runs(&script, (&ref_label, &ref_out), (&cand_label, &cand_out)) {
        panic!("{report}");
    }
    eprintln!(
        "{}: {} steps identical on {ref_label} and {cand_label}",
        script.name,
        script.steps.len()
    );
}

/// Prints every step with its normalized output (`FERROKV_COMPAT_SHOW=1`),
/// for writing and reviewing scripts.
fn print_transcript(script: &Script, outputs: &[Output]) {
    for (step, out) in script.steps.iter().zip(outputs) {
        eprintln!(
            "$ etcdctl {}    [line {}, exit {}]",
            step.text, step.line, out.code
        );
        eprint!("{}", shorten(&out.stdout));
        for line in out.stderr.lines() {
            eprintln!("! {line}");
        }
    }
}

/// `tests/testdata/compat`.
pub fn compat_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join("compat")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_quotes_blocks_and_directives() {
        let text = r#"
# header
!normalize-json dbSize raftIndex
put foo "hello world"   # trailing comment
put "" x
put big <stdin:repeat:ab:3>
txn -w json <<EOF
value("foo") = "bar"

!repeat 2 put k{i} v{i}

EOF
get foo
"#;
        let s = parse_script("t.txt", text).unwrap();
        assert_eq!(s.normalize_keys, vec!["dbSize", "raftIndex"]);
        assert_eq!(s.steps.len(), 5);
        assert_eq!(s.steps[0].args, vec!["put", "foo", "hello world"]);
        assert_eq!(s.steps[0].line, 4);
        assert_eq!(s.steps[1].args, vec!["put", "", "x"]);
        assert_eq!(s.steps[2].args, vec!["put", "big"]);
        assert_eq!(s.steps[2].stdin.as_deref(), Some(&b"ababab"[..]));
        let bin = parse_script("t.txt", r"put bin <stdin:repeat:\xff\n\x20:2>").unwrap();
        assert_eq!(bin.steps[0].stdin.as_deref(), Some(&b"\xff\n \xff\n "[..]));
        assert_eq!(s.steps[3].args, vec!["txn", "-w", "json"]);
        assert_eq!(
            String::from_utf8(s.steps[3].stdin.clone().unwrap()).unwrap(),
            "value(\"foo\") = \"bar\"\n\nput k0 v0\nput k1 v1\n\n"
        );
        assert_eq!(s.steps[4].args, vec!["get", "foo"]);
        assert_eq!(s.steps[4].line, 13);
    }

    #[test]
    fn rejects_malformed_scripts() {
        for bad in [
            "put \"foo",
            "txn <<EOF\nput a b\n",
            "!frobnicate",
            "put big <stdin:repeat:x:99999999999>",
            "put big <stdin:repeat:x:1> <stdin:repeat:y:1>",
            "# only comments",
        ] {
            assert!(parse_script("bad.txt", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn background_steps_start_and_stop_by_name() {
        let s = parse_script("t.txt", "!bg w watch --prefix foo\nput foo/a 1\n!stop w\n").unwrap();
        assert_eq!(s.steps.len(), 3);
        assert_eq!(s.steps[0].kind, StepKind::Start("w".into()));
        assert_eq!(s.steps[0].args, vec!["watch", "--prefix", "foo"]);
        assert_eq!(s.steps[1].kind, StepKind::Run);
        assert_eq!(s.steps[2].kind, StepKind::Stop("w".into()));
        for bad in [
            "!bg w watch foo",
            "!stop w",
            "!bg w watch foo\n!bg w watch bar\n!stop w",
            "!bg w\n!stop w",
            "!bg w watch foo\n!stop w extra",
            "!bg",
        ] {
            assert!(parse_script("bad.txt", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn capture_takes_word_substitutes_and_hides_it() {
        let s = parse_script(
            "t.txt",
            "lease grant 60\n!capture L lease\nput --lease=$L foo bar\nlease timetolive $L",
        )
        .unwrap();
        assert_eq!(s.steps.len(), 3);
        assert_eq!(
            s.steps[0].captures,
            vec![Capture {
                name: "L".into(),
                after: "lease".into()
            }]
        );
        let mut c = Captured::default();
        let grant = Output {
            stdout: "lease 694d7a4f0e1b2c0d granted with TTL(60s)\n".into(),
            stderr: String::new(),
            code: 0,
        };
        c.capture(&s.steps[0].captures[0], &grant.stdout);
        assert_eq!(
            c.substitute(&s.steps[1].args),
            vec!["put", "--lease=694d7a4f0e1b2c0d", "foo", "bar"]
        );
        assert_eq!(c.hide(&grant).stdout, "lease $L granted with TTL(60s)\n");
        let json = Output {
            stdout: format!("{{\"lease\":{}}}", 0x694d7a4f0e1b2c0du64),
            stderr: "lease 694d7a4f0e1b2c0d not found".into(),
            code: 1,
        };
        let hidden = c.hide(&json);
        assert_eq!(hidden.stdout, "{\"lease\":$L}");
        assert_eq!(hidden.stderr, "lease $L not found");
        for bad in [
            "!capture L lease",
            "get foo\n!capture L",
            "get foo\n!capture L-x lease",
            "get foo\n!capture L lease\n!capture L lease",
            "!bg w watch foo\n!capture L lease\n!stop w",
        ] {
            assert!(parse_script("bad.txt", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quoted_directive_is_a_plain_argument() {
        let s = parse_script("t.txt", "put k '<stdin:repeat:x:3>'").unwrap();
        assert_eq!(s.steps[0].args, vec!["put", "k", "<stdin:repeat:x:3>"]);
        assert_eq!(s.steps[0].stdin, None);
    }

    #[test]
    fn report_names_step_and_shows_both_sides() {
        let s = parse_script("t.txt", "get foo\nget bar").unwrap();
        let same = Output {
            stdout: "foo\nbar\n".into(),
            stderr: String::new(),
            code: 0,
        };
        let other = Output {
            stdout: "foo\nbaz\n".into(),
            stderr: String::new(),
            code: 1,
        };
        assert!(compare_runs(
            &s,
            ("a", &[same.clone(), same.clone()]),
            ("b", &[same.clone(), same.clone()])
        )
        .is_ok());
        let report = compare_runs(
            &s,
            ("a", &[same.clone(), same.clone()]),
            ("b", &[same, other]),
        )
        .unwrap_err();
        assert!(report.contains("1 of 2 steps differ"), "{report}");
        assert!(
            report.contains("step 2 (line 2): etcdctl get bar"),
            "{report}"
        );
        assert!(report.contains("exit code: a 0, b 1"), "{report}");
        assert!(report.contains("- bar\n+ baz\n"), "{report}");
    }
}
