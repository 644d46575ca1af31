-- The participant's state, in the participant group's own database (topology goes into the
-- topology tables of the same database). The leader changes these tables for each sequencer
-- event, together with `participant_ledger`, in one fenced transaction; the submission API
-- registers in-flight submissions in fenced transactions of their own.

-- Per participant member: the processed sequencer position and the ledger end. The ledger
-- end is the only visibility fence: nothing at a higher offset is ever served, and a new
-- leader deletes rows above it before serving.
create table participant_ledger (
    member text primary key,
    -- The last sequencer event processed (µs), null before the first.
    processed_ts bigint,
    -- The last published offset (0: nothing published yet) and its record time.
    ledger_end bigint not null default 0,
    ledger_end_record_time bigint
);

-- Published transactions, at dense consecutive offsets shared with the completions.
create table participant_updates (
    ledger_offset bigint primary key,
    -- The confirmation request's root hash (hex).
    update_id text not null unique,
    -- The request's sequencing timestamp.
    record_time bigint not null,
    -- Known only at the submitting participant.
    command_id text,
    workflow_id text,
    -- Every stakeholder of an event (for party filters), and the events (JSON).
    witnesses text[] not null,
    events text not null
);

-- Completions of this participant's submissions, on the same offset sequence.
create table participant_completions (
    ledger_offset bigint primary key,
    user_id text not null,
    command_id text not null,
    submission_id text,
    act_as text[] not null,
    -- 'OK' or the error id (e.g. LOCAL_VERDICT_TIMEOUT), with the gRPC code and a message.
    status text not null,
    grpc_code integer not null,
    message text not null,
    -- The transaction's update id when accepted.
    update_id text,
    record_time bigint not null,
    -- The deduplication period the command was checked against.
    dedup_offset bigint,
    dedup_duration_micros bigint
);
create index participant_completions_user on participant_completions (user_id, ledger_offset);

-- Contracts seen in published transactions: active while archived_offset is null.
create table participant_contracts (
    contract_id text primary key,
    template text not null,
    arguments text not null,
    signatories text[] not null,
    observers text[] not null,
    created_offset bigint not null,
    created_update text not null,
    archived_offset bigint
);
create index participant_contracts_active on participant_contracts (created_offset) where archived_offset is null;

-- Submissions registered before sending, by change id hash, until their completion.
create table participant_in_flight (
    change_hash text primary key,
    message_id text not null unique,
    request_uuid text not null,
    user_id text not null,
    command_id text not null,
    act_as text[] not null,
    submission_id text,
    workflow_id text,
    dedup_offset bigint,
    dedup_duration_micros bigint,
    -- Not sequenced after this sequencer time ⇒ NOT_SEQUENCED_TIMEOUT.
    max_sequencing_time bigint not null,
    -- When the request's event was seen (null: not yet).
    sequenced_at bigint
);
create index participant_in_flight_unsequenced on participant_in_flight (max_sequencing_time) where sequenced_at is null;

-- The latest accepted completion per change id (only acceptances deduplicate).
create table participant_dedup (
    change_hash text primary key,
    accepted_offset bigint not null,
    accepted_record_time bigint not null,
    submission_id text
);

-- Requests this participant validates, from their sequencing until their publication.
create table participant_pending (
    request_id bigint primary key,
    root_hash bytea not null,
    request_uuid text not null,
    decision_time bigint not null,
    -- This participant's own submission: its change id hash.
    change_hash text,
    -- The events this participant sees (JSON).
    events text not null,
    -- The outcome once decided (JSON): accepted, or rejected with the error id.
    outcome text,
    -- The confirmation response to send (protocol message), until seen sequenced.
    response bytea,
    response_deadline bigint not null,
    response_delivered boolean not null default false
);

-- Pessimistic locks: consumed inputs and created ids of pending requests.
create table participant_locks (
    contract_id text primary key,
    request_id bigint not null
);
create index participant_locks_request on participant_locks (request_id);
