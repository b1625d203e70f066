//! `ferroutl`: the offline tool (etcdutl's role). So far it reads snapshot
//! files: `ferroutl snapshot status FILE [-w simple|json|fields|table]`,
//! printed exactly as `etcdctl snapshot status` prints them.

const USAGE: &str = "\
ferroutl: offline tool for ferrokv and etcd files

Usage:
  ferroutl snapshot status <filename> [-w simple|json|fields|table]
  ferroutl version
";

fn main() {
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| ferrokv_ctl::cli::arg_from_os(&a))
        .collect();
    let words: Vec<&str> = argv
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let code = match words.as_slice() {
        ["snapshot", "status", ..] => ferrokv_ctl::main_with_args(argv),
        ["version"] => {
            println!("ferroutl version: {}", env!("CARGO_PKG_VERSION"));
            println!("API version: {}", ferrokv_ctl::API_VERSION);
            0
        }
        [] => {
            print!("{USAGE}");
            0
        }
        other => {
            eprintln!(
                "Error: {}: not supported by ferroutl yet (snapshot restore, defrag --data-dir \
                 and the WAL inspector are next; see docs/ctl.md)",
                other.join(" ")
            );
            eprint!("{USAGE}");
            4
        }
    };
    std::process::exit(code);
}
