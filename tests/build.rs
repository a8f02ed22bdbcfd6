//! The fake CloudNativePG instance manager's gRPC client, generated from the very
//! `.proto` files the sidecar is built from (walship-cnpg's `proto/`): the test speaks
//! the wire format, not walship's Rust types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = "../crates/walship-cnpg/proto";
    let files = [
        "identity.proto",
        "wal.proto",
        "backup.proto",
        "metrics.proto",
    ]
    .map(|f| format!("{dir}/{f}"));
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(&files, [dir])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
