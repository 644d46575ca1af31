-- The active's heartbeat moves to its own row. Fenced transactions hold a share lock on the
-- group's `leadership` row until they end (so a takeover waits for them); a heartbeat on that
-- same row had to wait too, and a long fenced transaction demoted a healthy leader.
-- Written together with the epoch by every takeover; only the lock session of the holder
-- (`holder_pid`) at `epoch` updates `heartbeat_ts` afterwards.
create table leadership_heartbeat (
  group_key bigint primary key,
  epoch bigint not null,
  holder_pid integer not null,
  heartbeat_ts bigint not null
);

insert into leadership_heartbeat (group_key, epoch, holder_pid, heartbeat_ts)
  select group_key, epoch, holder_pid, heartbeat_ts from leadership;

comment on column leadership.heartbeat_ts is
  'time of the takeover; the live heartbeat is leadership_heartbeat.heartbeat_ts';
