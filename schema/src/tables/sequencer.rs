//! Tables of the database sequencer.

diesel::table! {
    /// One row per sequencer node index.
    sequencer_watermarks (node_index) {
        node_index -> Integer,
        watermark_ts -> BigInt,
        online -> Bool,
    }
}

diesel::table! {
    /// The total order of sequenced events.
    sequencer_events (ts) {
        ts -> BigInt,
        node_index -> SmallInt,
        kind -> Text,
        message_id -> Nullable<Text>,
        sender -> Nullable<Integer>,
        recipients -> Array<Integer>,
        error_message -> Nullable<Text>,
    }
}

diesel::table! {
    /// One row per member of an event.
    sequencer_event_recipients (node_index, recipient_id, ts) {
        node_index -> SmallInt,
        recipient_id -> Integer,
        ts -> BigInt,
    }
}

diesel::table! {
    /// Event bodies, keyed by event timestamp.
    sequencer_payloads (ts) {
        ts -> BigInt,
        node_index -> SmallInt,
        content -> Binary,
    }
}

diesel::table! {
    /// Claimed (sender, message id) pairs for idempotent sends.
    sequencer_message_ids (sender, message_id) {
        sender -> Integer,
        message_id -> Text,
        ts -> BigInt,
        node_index -> SmallInt,
        max_sequencing_ts -> BigInt,
        digest -> Nullable<Binary>,
    }
}

diesel::table! {
    /// Registered sequencer members.
    sequencer_members (id) {
        id -> Integer,
        member -> Text,
        registered_ts -> BigInt,
        pruned_previous_event_ts -> Nullable<BigInt>,
        enabled -> Bool,
        token_sha256 -> Nullable<Binary>,
    }
}

diesel::table! {
    /// Latest acknowledged timestamp per member.
    sequencer_acknowledgements (member_id) {
        member_id -> Integer,
        ts -> BigInt,
    }
}

diesel::table! {
    /// Exclusive lower bound of readable events.
    sequencer_lower_bound (single_row) {
        single_row -> Bool,
        ts -> BigInt,
    }
}

diesel::joinable!(sequencer_acknowledgements -> sequencer_members (member_id));

diesel::allow_tables_to_appear_in_same_query!(
    sequencer_members,
    sequencer_acknowledgements,
    sequencer_watermarks,
    sequencer_events,
    sequencer_event_recipients,
    sequencer_payloads,
    sequencer_message_ids,
);
