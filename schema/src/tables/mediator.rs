//! The mediator's tables (migration `2026-11-27-000009_mediator`).

diesel::table! {
    /// The last sequencer event processed, per mediator member.
    mediator_position (member) {
        member -> Text,
        processed_ts -> BigInt,
    }
}

diesel::table! {
    /// Every registered confirmation request, pending or finalized.
    mediator_requests (request_id) {
        request_id -> BigInt,
        request_uuid -> Text,
        root_hash -> Binary,
        deadline -> BigInt,
        decision_time -> BigInt,
        recipients -> Array<Text>,
        aggregation -> Text,
        verdict -> Nullable<Text>,
        finalized_at -> Nullable<BigInt>,
        delivered_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// Request UUIDs seen within the deduplication window.
    mediator_request_uuids (request_uuid) {
        request_uuid -> Text,
        request_id -> BigInt,
        expires_at -> BigInt,
    }
}
