-- Sequencer members, acknowledgements and the pruning lower bound.

create table sequencer_members (
  id integer generated always as identity primary key,
  member text collate "C" not null unique,
  -- the member reads events strictly after this
  registered_ts bigint not null,
  -- the member's last event below the pruning point, so the first event after pruning
  -- still carries a correct previous timestamp
  pruned_previous_event_ts bigint,
  enabled boolean not null default true
);

create table sequencer_acknowledgements (
  member_id integer primary key references sequencer_members (id),
  ts bigint not null
);

-- Exclusive lower bound of readable events (moves forward only).
create table sequencer_lower_bound (
  single_row boolean primary key default true check (single_row),
  ts bigint not null
);
