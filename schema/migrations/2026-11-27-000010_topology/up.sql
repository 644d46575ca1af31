-- Every topology transaction a node received through the sequencer, in sequencing order,
-- with its outcome. Each node (mediator, participant) keeps its own copy and answers "the
-- topology at T" from it: the accepted add/replace rows with effective_from <= T <
-- coalesce(effective_until, +inf).
create table topology_transactions (
  -- the sequencing timestamp (µs): the order every member applies them in
  sequenced_at bigint primary key,
  sender text collate "C" not null,
  operation text not null check (operation in ('add_replace', 'remove')),
  serial integer not null check (serial >= 1),
  mapping_kind text not null check (
    mapping_kind in ('participant_join', 'party_to_participant', 'mediator_state', 'synchronizer_parameters')),
  -- participant or party name; '' for the singletons
  mapping_key text collate "C" not null,
  -- the whole transaction as a versioned ProtocolMessage
  content bytea not null,
  accepted boolean not null,
  -- why it was ignored (accepted = false)
  ignore_reason text,
  -- sequenced_at + the topology change delay in effect then, kept monotonic; null if ignored
  effective_from bigint,
  -- when the next accepted transaction of the same key takes effect; null while none
  effective_until bigint,
  check (accepted = (ignore_reason is null)),
  check (accepted = (effective_from is not null)),
  check (accepted or effective_until is null)
);

-- The latest accepted transaction of a key (serial checks, ending the previous one).
create index topology_transactions_by_key
  on topology_transactions (mapping_kind, mapping_key, sequenced_at) where accepted;
-- Snapshots.
create index topology_transactions_by_effective
  on topology_transactions (effective_from) where accepted;
