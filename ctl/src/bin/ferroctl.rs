//! `ferroctl`: etcdctl's commands, flags and output, for ferrokv and etcd.

fn main() {
    let code = ferrokv_ctl::main_with_args(
        std::env::args_os()
            .skip(1)
            .map(|a| ferrokv_ctl::cli::arg_from_os(&a))
            .collect(),
    );
    std::process::exit(code);
}
