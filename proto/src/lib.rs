//! Syncline's gRPC APIs, generated from the `.proto` files beside this crate.

/// `syncline.sequencer.v1`: the sequencer's public and admin APIs.
pub mod sequencer {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("syncline.sequencer.v1");
}

/// `syncline.admin.v1`: administration common to every node.
pub mod admin {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("syncline.admin.v1");
}

/// `syncline.protocol.v1`: the synchronizer protocol's messages, carried as envelope contents.
pub mod protocol {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("syncline.protocol.v1");
}

/// `syncline.mediator.v1`: the mediator's admin API.
pub mod mediator {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("syncline.mediator.v1");
}

/// `syncline.ledger.v1`: the participant's ledger API (shaped like Canton's Ledger API v2).
pub mod ledger {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("syncline.ledger.v1");
}

/// Encoded file descriptors of every service, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("syncline_descriptor");
