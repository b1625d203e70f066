// Protos are compiled with protox (pure Rust), so building ferrokv never
// needs a `protoc` binary on the machine.
fn main() {
    let files = [
        "proto/kv.proto",
        "proto/auth.proto",
        "proto/rpc.proto",
        "proto/v3lock.proto",
        "proto/v3election.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = match protox::compile(files, ["proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("proto compile failed: {e}"),
    };
    // The JSON gateway maps JSON to protobuf by these descriptors (field
    // names, types, oneofs, enum names, which calls stream), so it follows
    // the protos without a hand-written mapping per message.
    let out_dir = match std::env::var("OUT_DIR") {
        Ok(d) => std::path::PathBuf::from(d),
        Err(e) => panic!("OUT_DIR not set: {e}"),
    };
    let descriptors = prost::Message::encode_to_vec(&fds);
    if let Err(e) = std::fs::write(out_dir.join("descriptors.bin"), descriptors) {
        panic!("writing the proto descriptors failed: {e}");
    }
    let mut cfg = prost_build::Config::new();
    cfg.bytes(["."]);
    if let Err(e) = cfg.compile_fds(fds) {
        panic!("prost codegen failed: {e}");
    }
}
