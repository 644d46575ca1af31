//! Compile the gRPC protos (with a descriptor set for server reflection).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // The protocol messages first, on their own: the services below refer to them through
    // `extern_path`, as the modules in lib.rs are flat rather than nested by package.
    tonic_prost_build::configure().compile_protos(&["syncline/protocol/v1/protocol.proto"], &["."])?;
    // The descriptor set includes the imported protocol file.
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("syncline_descriptor.bin"))
        .extern_path(".syncline.protocol.v1", "crate::protocol")
        .compile_protos(
            &[
                "syncline/sequencer/v1/sequencer.proto",
                "syncline/admin/v1/admin.proto",
                "syncline/mediator/v1/mediator_admin.proto",
                "syncline/ledger/v1/commands.proto",
                "syncline/ledger/v1/completions.proto",
                "syncline/ledger/v1/updates.proto",
                "syncline/ledger/v1/state.proto",
                "syncline/ledger/v1/admin.proto",
            ],
            &["."],
        )?;
    Ok(())
}
