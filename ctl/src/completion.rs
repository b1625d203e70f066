//! `ferroctl completion bash|zsh|fish`: shell completion scripts made from
//! the command table in `cli`, so they always know every command, group
//! and flag ferroctl parses. (etcdctl's are cobra's, which call back into
//! the binary; these are self-contained.)

use std::collections::BTreeMap;

use crate::cli::{Command, Flag, Kind, COMMANDS, GLOBAL_FLAGS};

/// The words that may follow `path` ("" for the first word).
fn next_words() -> BTreeMap<String, Vec<&'static str>> {
    let mut out: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    for c in COMMANDS {
        let words: Vec<&'static str> = c.path.split(' ').collect();
        for i in 0..words.len() {
            let parent = words[..i].join(" ");
            let list = out.entry(parent).or_default();
            if !list.contains(&words[i]) {
                list.push(words[i]);
            }
        }
    }
    out
}

fn visible(flags: &[Flag]) -> impl Iterator<Item = &Flag> {
    flags.iter().filter(|f| !f.hidden)
}

/// A command's own flags, `endpoint`'s inherited `--cluster` included.
fn local_flags(c: &Command) -> Vec<String> {
    let mut names: Vec<String> = visible(c.flags).map(|f| format!("--{}", f.name)).collect();
    if c.path.starts_with("endpoint ") {
        names.push("--cluster".into());
    }
    names
}

fn global_flags() -> Vec<String> {
    visible(GLOBAL_FLAGS)
        .map(|f| format!("--{}", f.name))
        .collect()
}

/// Global flags whose value may be the next word (`--endpoints
/// host:port get`): skipped while looking for the command words.
fn valued_flags() -> Vec<String> {
    GLOBAL_FLAGS
        .iter()
        .filter(|f| f.kind != Kind::Bool)
        .map(|f| format!("--{}", f.name))
        .collect()
}

fn bash() -> String {
    let mut words = String::new();
    for (path, next) in next_words() {
        words.push_str(&format!(
            "        \"{path}\") echo \"{}\" ;;\n",
            next.join(" ")
        ));
    }
    let mut flags = String::new();
    for c in COMMANDS {
        let local = local_flags(c);
        if !local.is_empty() {
            flags.push_str(&format!(
                "        \"{}\") echo \"{}\" ;;\n",
                c.path,
                local.join(" ")
            ));
        }
    }
    format!(
        r#"# bash completion for ferroctl: source it, or put it in
# /etc/bash_completion.d/ferroctl (made by `ferroctl completion bash`).
_ferroctl_globals="{globals}"
_ferroctl_valued=" {valued} "
_ferroctl_words() {{
    case "$1" in
{words}    esac
}}
_ferroctl_flags() {{
    case "$1" in
{flags}    esac
}}
_ferroctl() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" path="" w i
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        if [[ "$w" == -* ]]; then
            if [[ "$w" != *=* && "$_ferroctl_valued" == *" $w "* ]]; then
                ((i++))
            fi
            continue
        fi
        if [[ " $(_ferroctl_words "$path") " == *" $w "* ]]; then
            path="${{path:+$path }}$w"
        else
            break
        fi
    done
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$(_ferroctl_flags "$path") $_ferroctl_globals" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$(_ferroctl_words "$path")" -- "$cur"))
    fi
}}
complete -o default -F _ferroctl ferroctl
"#,
        globals = global_flags().join(" "),
        valued = valued_flags().join(" "),
    )
}

fn fish() -> String {
    let mut out = String::from(
        "# fish completion for ferroctl (made by `ferroctl completion fish`)\ncomplete -c ferroctl -f\n",
    );
    for f in visible(GLOBAL_FLAGS) {
        out.push_str(&format!(
            "complete -c ferroctl -l {} -d {}\n",
            f.name,
            fish_quote(f.usage)
        ));
    }
    for (path, next) in next_words() {
        let cond = if path.is_empty() {
            "__fish_use_subcommand".to_string()
        } else {
            let last = path.rsplit(' ').next().unwrap_or(&path);
            format!("__fish_seen_subcommand_from {last}")
        };
        out.push_str(&format!(
            "complete -c ferroctl -n '{cond}' -a '{}'\n",
            next.join(" ")
        ));
    }
    for c in COMMANDS {
        let last = c.path.rsplit(' ').next().unwrap_or(c.path);
        for f in visible(c.flags) {
            out.push_str(&format!(
                "complete -c ferroctl -n '__fish_seen_subcommand_from {last}' -l {} -d {}\n",
                f.name,
                fish_quote(f.usage)
            ));
        }
    }
    out
}

fn fish_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The script for `shell`, or why there is none.
pub fn script(shell: &str) -> Result<String, String> {
    match shell {
        "bash" => Ok(bash()),
        // zsh runs bash completions through bashcompinit.
        "zsh" => Ok(format!(
            "#compdef ferroctl\nautoload -U +X bashcompinit && bashcompinit\n{}",
            bash()
        )),
        "fish" => Ok(fish()),
        other => Err(format!("completion {other}: not supported by ferroctl yet")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_reachable_word_by_word() {
        let next = next_words();
        for c in COMMANDS {
            let words: Vec<&str> = c.path.split(' ').collect();
            for i in 0..words.len() {
                assert!(
                    next[&words[..i].join(" ")].contains(&words[i]),
                    "{}",
                    c.path
                );
            }
        }
        assert!(next[""].contains(&"lease") && next["lease"].contains(&"keep-alive"));
    }

    #[test]
    fn value_flags_are_known_so_their_values_are_skipped() {
        let v = valued_flags();
        assert!(v.contains(&"--endpoints".to_string()));
        assert!(!v.contains(&"--hex".to_string()), "a switch");
    }
}
