-- The mediator's state, in the mediator group's own database. Every event the leader
-- processes changes these tables and `mediator_position` in one fenced transaction, so a new
-- leader resumes exactly after the last processed event.

-- The last sequencer event processed, per mediator member.
create table mediator_position (
    member text primary key,
    processed_ts bigint not null
);

-- Every registered confirmation request: pending (verdict null) or finalized.
create table mediator_requests (
    -- The request's sequencing timestamp.
    request_id bigint primary key,
    request_uuid text not null,
    root_hash bytea not null,
    -- Participant response deadline and decision time (sequencer time, µs).
    deadline bigint not null,
    decision_time bigint not null,
    -- Participants the verdict goes to.
    recipients text[] not null,
    -- The aggregation state (JSON), updated with every counted response.
    aggregation text not null,
    -- The verdict (JSON) once finalized, and the timestamp of the event that finalized it.
    verdict text,
    finalized_at bigint,
    -- The timestamp at which the verdict was sequenced, once observed.
    delivered_at bigint
);
create index mediator_requests_pending on mediator_requests (deadline) where verdict is null;
create index mediator_requests_undelivered on mediator_requests (decision_time)
    where verdict is not null and delivered_at is null;

-- Request UUIDs seen within the deduplication window.
create table mediator_request_uuids (
    request_uuid text primary key,
    request_id bigint not null,
    expires_at bigint not null
);
create index mediator_request_uuids_expiry on mediator_request_uuids (expires_at);
