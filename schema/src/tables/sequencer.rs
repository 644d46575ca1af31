//! Tables of the database sequencer.

diesel::table! {
    /// One row per sequencer node index.
    sequencer_watermarks (node_index) {
        node_index -> Integer,
        watermark_ts -> BigInt,
        online -> Bool,
        /// Every event of the index above its watermark is at or below this (NULL: unknown).
        written_to -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// The total order of sequenced events, each with its payload and its message-id claim
    /// (`max_sequencing_ts` set: unique per (sender, message id)).
    sequencer_events (ts) {
        ts -> BigInt,
        node_index -> SmallInt,
        kind -> Text,
        message_id -> Nullable<Text>,
        sender -> Nullable<Integer>,
        recipients -> Array<Integer>,
        error_message -> Nullable<Text>,
        error_code -> Nullable<Text>,
        payload -> Nullable<Binary>,
        max_sequencing_ts -> Nullable<BigInt>,
        digest -> Nullable<Binary>,
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
);
