-- The lean event layout: one row per event carries its payload and its message-id claim, so
-- a batch writes one events row and its recipient rows per event (issue 13).
--
-- The payload moves into the events row; a large one goes out of line (TOAST) by itself.
-- The claim is a (max_sequencing_ts, digest) pair on the row of the event that holds it, and
-- a unique index on (sender, message_id) over claimed rows makes a second claim fail; the
-- writer inserts plainly and retries only a batch that hit a duplicate with conflict
-- handling. A claim lives as long as its event: pruning keeps the row (without payload and
-- recipient rows) of an event whose claim may still be retried, and the claim expiry removes
-- it afterwards. Recovery truncation removes claims with their events.
alter table sequencer_events
  add column payload bytea,
  add column max_sequencing_ts bigint,
  add column digest bytea;

update sequencer_events e set payload = p.content from sequencer_payloads p where p.ts = e.ts;

-- A claim is taken with its event, so the (sender, message id) stored are the claim's.
update sequencer_events e
   set max_sequencing_ts = m.max_sequencing_ts, digest = m.digest, sender = m.sender, message_id = m.message_id
  from sequencer_message_ids m where m.ts = e.ts;

-- Claims that outlived their pruned events stay as claim-only rows (no recipients: never read)
-- until they expire.
insert into sequencer_events (ts, node_index, kind, message_id, sender, recipients, max_sequencing_ts, digest)
select m.ts, m.node_index, 'deliver', m.message_id, m.sender, '{}', m.max_sequencing_ts, m.digest
  from sequencer_message_ids m
 where not exists (select 1 from sequencer_events e where e.ts = m.ts);

create unique index sequencer_events_claims on sequencer_events (sender, message_id)
  where max_sequencing_ts is not null;

drop table sequencer_payloads;
drop table sequencer_message_ids;
-- Reads, truncation and pruning reach recipient rows through their primary key (by member,
-- or through the events they remove); no index by timestamp alone.
drop index sequencer_event_recipients_ts;
