//! The participant's tables (migration `2026-11-27-000011_participant`).

diesel::table! {
    /// Processed sequencer position and ledger end, per participant member.
    participant_ledger (member) {
        member -> Text,
        processed_ts -> Nullable<BigInt>,
        ledger_end -> BigInt,
        ledger_end_record_time -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// Published transactions.
    participant_updates (ledger_offset) {
        ledger_offset -> BigInt,
        update_id -> Text,
        record_time -> BigInt,
        command_id -> Nullable<Text>,
        workflow_id -> Nullable<Text>,
        witnesses -> Array<Text>,
        events -> Text,
    }
}

diesel::table! {
    /// Completions of this participant's submissions.
    participant_completions (ledger_offset) {
        ledger_offset -> BigInt,
        user_id -> Text,
        command_id -> Text,
        submission_id -> Nullable<Text>,
        act_as -> Array<Text>,
        status -> Text,
        grpc_code -> Integer,
        message -> Text,
        update_id -> Nullable<Text>,
        record_time -> BigInt,
        dedup_offset -> Nullable<BigInt>,
        dedup_duration_micros -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// Contracts, active while `archived_offset` is null.
    participant_contracts (contract_id) {
        contract_id -> Text,
        template -> Text,
        arguments -> Text,
        signatories -> Array<Text>,
        observers -> Array<Text>,
        created_offset -> BigInt,
        created_update -> Text,
        archived_offset -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// Submissions in flight, by change id hash.
    participant_in_flight (change_hash) {
        change_hash -> Text,
        message_id -> Text,
        request_uuid -> Text,
        user_id -> Text,
        command_id -> Text,
        act_as -> Array<Text>,
        submission_id -> Nullable<Text>,
        workflow_id -> Nullable<Text>,
        dedup_offset -> Nullable<BigInt>,
        dedup_duration_micros -> Nullable<BigInt>,
        max_sequencing_time -> BigInt,
        sequenced_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// The latest acceptance per change id.
    participant_dedup (change_hash) {
        change_hash -> Text,
        accepted_offset -> BigInt,
        accepted_record_time -> BigInt,
        submission_id -> Nullable<Text>,
    }
}

diesel::table! {
    /// Requests being validated, until publication.
    participant_pending (request_id) {
        request_id -> BigInt,
        root_hash -> Binary,
        request_uuid -> Text,
        decision_time -> BigInt,
        change_hash -> Nullable<Text>,
        events -> Text,
        outcome -> Nullable<Text>,
        response -> Nullable<Binary>,
        response_deadline -> BigInt,
        response_delivered -> Bool,
    }
}

diesel::table! {
    /// Pessimistic contract locks of pending requests.
    participant_locks (contract_id) {
        contract_id -> Text,
        request_id -> BigInt,
    }
}
