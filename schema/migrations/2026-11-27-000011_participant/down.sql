drop table participant_locks;
drop table participant_pending;
drop table participant_dedup;
drop table participant_in_flight;
drop table participant_contracts;
drop table participant_completions;
drop table participant_updates;
drop table participant_ledger;
