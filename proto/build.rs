//! Generates the gRPC code from `proto/coffer.proto` with a vendored protoc,
//! so building needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    println!("cargo:rerun-if-changed=proto/coffer.proto");
    tonic_prost_build::configure().compile_protos(&["proto/coffer.proto"], &["proto"])?;
    Ok(())
}
