//! Generates the gRPC messages and services of `worker serve` from `proto/` (KServe v2's and TF
//! Serving's published definitions), with protox: nothing to install besides cargo.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/inference.proto", "proto/tensorflow.proto", "proto/tensorflow_serving.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().build_client(false).bytes(".").compile_fds(descriptors)?;
    Ok(())
}
