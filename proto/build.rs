//! Compile the gRPC protos (with a descriptor set for server reflection).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure().file_descriptor_set_path(out.join("syncline_descriptor.bin")).compile_protos(
        &[
            "syncline/sequencer/v1/sequencer.proto",
            "syncline/admin/v1/admin.proto",
            "syncline/protocol/v1/protocol.proto",
            "syncline/mediator/v1/mediator_admin.proto",
        ],
        &["."],
    )?;
    Ok(())
}
