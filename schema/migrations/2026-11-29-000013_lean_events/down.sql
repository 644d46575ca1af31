create index sequencer_event_recipients_ts on sequencer_event_recipients (ts);

create table sequencer_payloads (
  ts bigint primary key,
  node_index smallint not null,
  content bytea not null
);
alter table sequencer_payloads set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
  autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 1000000);
insert into sequencer_payloads (ts, node_index, content)
select ts, node_index, payload from sequencer_events where payload is not null;

create table sequencer_message_ids (
  sender integer not null,
  message_id text collate "C" not null,
  ts bigint not null,
  node_index smallint not null,
  max_sequencing_ts bigint not null,
  digest bytea,
  primary key (sender, message_id)
);
create index sequencer_message_ids_node_ts on sequencer_message_ids (node_index, ts);
create index sequencer_message_ids_mst on sequencer_message_ids (max_sequencing_ts);
insert into sequencer_message_ids (sender, message_id, ts, node_index, max_sequencing_ts, digest)
select sender, message_id, ts, node_index, max_sequencing_ts, digest
  from sequencer_events where max_sequencing_ts is not null;

-- Claim-only rows (their events were pruned) live on in the claims table only.
delete from sequencer_events where cardinality(recipients) = 0 and max_sequencing_ts is not null;

drop index sequencer_events_claims;
alter table sequencer_events drop column payload, drop column max_sequencing_ts, drop column digest;
