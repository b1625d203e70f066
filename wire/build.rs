// Protos are compiled with protox (pure Rust), so building ferrokv never
// needs a `protoc` binary on the machine.
fn main() {
    let files = ["proto/kv.proto", "proto/auth.proto", "proto/rpc.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = match protox::compile(files, ["proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("proto compile failed: {e}"),
    };
    let mut cfg = prost_build::Config::new();
    cfg.bytes(["."]);
    if let Err(e) = cfg.compile_fds(fds) {
        panic!("prost codegen failed: {e}");
    }
}
