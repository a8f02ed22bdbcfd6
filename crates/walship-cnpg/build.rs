//! Compiles the CNPG-I `.proto` files in `proto/` with protox (no protoc needed) and
//! generates tonic servers and clients for them.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/identity.proto",
        "proto/wal.proto",
        "proto/backup.proto",
        "proto/metrics.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
