comment on column leadership.heartbeat_ts is null;
drop table leadership_heartbeat;
