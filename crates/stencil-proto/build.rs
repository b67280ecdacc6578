//! Compiles `proto/` with `protox` (pure Rust, no system `protoc`) and generates prost messages, plus, with
//! the `grpc` feature, tonic clients and servers for both protocol generations. The encoded descriptor
//! set is written next to the generated code for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "datadog/intake/stateful/stateful.proto",
        "datadog/intake/stateful/v2/logs.proto",
        "datadog/intake/stateful/v3/logs.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("stencil_descriptor.bin"), fds.encode_to_vec())?;
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        // The agent resends a payload's bytes on every replay: shared, not copied.
        .bytes(".datadog.intake.stateful.StatefulBatch.data")
        .build_client(grpc)
        .build_server(grpc)
        .compile_fds(fds)?;
    Ok(())
}
