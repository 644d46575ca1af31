-- Syncline coordination schema. All timestamps are bigint microseconds since the Unix epoch.

-- Current time in microseconds, taken from the database clock so that lease checks do not
-- depend on the clocks of the replicas.
create function syncline_now_micros() returns bigint
  language sql volatile
  as $$ select (extract(epoch from clock_timestamp()) * 1000000)::bigint $$;

-- One row per sequencer node index: "I will never write an event at or below watermark_ts
-- again, and everything I wrote at or below it is committed."
create table sequencer_watermarks (
  node_index integer primary key check (node_index >= 0 and node_index < 32),
  watermark_ts bigint not null,
  online boolean not null
);

-- The total order. ts is globally unique thanks to timestamp partitioning.
create table sequencer_events (
  ts bigint primary key,
  node_index smallint not null,
  kind text not null check (kind in ('deliver', 'error')),
  message_id text collate "C",
  sender integer,
  -- every member the event is addressed to (sender included); -1 means broadcast
  recipients integer[] not null,
  error_message text
);

-- Fan-out index: one row per member of an event, written in the event's transaction.
create table sequencer_event_recipients (
  node_index smallint not null,
  recipient_id integer not null,
  ts bigint not null,
  primary key (node_index, recipient_id, ts)
);
create index sequencer_event_recipients_ts on sequencer_event_recipients (ts);

-- Message bodies, keyed by the timestamp of the event that carries them and written in the
-- same transaction, so that no payload exists without its event and truncation is exact.
-- (Truncation deletes "ts > watermark" of one index: a short range of the primary key, so
-- neither table needs an index on node_index.)
create table sequencer_payloads (
  ts bigint primary key,
  node_index smallint not null,
  content bytea not null
);

-- Idempotent sends: a (sender, message id) pair is sequenced at most once. Claimed in the
-- transaction that writes the event, removed with it by recovery truncation.
create table sequencer_message_ids (
  sender integer not null,
  message_id text collate "C" not null,
  ts bigint not null,
  node_index smallint not null,
  max_sequencing_ts bigint not null,
  primary key (sender, message_id)
);
create index sequencer_message_ids_node_ts on sequencer_message_ids (node_index, ts);
create index sequencer_message_ids_mst on sequencer_message_ids (max_sequencing_ts);

-- Leader election of replica groups (mediator, participant). The advisory lock decides who
-- is active; this row carries the fencing epoch and the active's heartbeat.
create table leadership (
  group_key bigint primary key,
  group_name text not null,
  epoch bigint not null,
  holder text not null,
  holder_pid integer not null,
  acquired_ts bigint not null,
  heartbeat_ts bigint not null
);

-- Big append-only tables: vacuum and analyze by row counts, not by fractions of the table.
alter table sequencer_events set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
  autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 1000000);
alter table sequencer_event_recipients set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 100000,
  autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 10000000);
alter table sequencer_payloads set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
  autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 1000000);
