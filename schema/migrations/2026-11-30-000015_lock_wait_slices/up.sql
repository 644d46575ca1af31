-- Waiting for an advisory lock (standby replicas for their group's leadership lock, sequencer
-- processes for their peers' index locks) without holding back VACUUM. A session blocked in one
-- statement keeps that statement's snapshot, and with it the xmin horizon of the whole
-- database, for as long as it waits: hours for a standby, so dead rows of every table (the
-- sequencer's watermark row is rewritten at every batch) could not be removed and each scan
-- grew. These procedures wait in slices of at most one second, each in a transaction of its
-- own, so the horizon moves on between them; the wait itself stays blocking (granted the
-- moment the holder lets go or its session ends) and the lock, taken at session level, stays
-- held after the call.
create procedure syncline_advisory_lock_wait(key bigint) language plpgsql as $$
begin
  loop
    begin
      perform set_config('lock_timeout', '1000', true);
      perform pg_advisory_lock(key);
      return;
    exception when lock_not_available then
      null;
    end;
    commit;
  end loop;
end $$;

create procedure syncline_advisory_lock_wait(key1 integer, key2 integer) language plpgsql as $$
begin
  loop
    begin
      perform set_config('lock_timeout', '1000', true);
      perform pg_advisory_lock(key1, key2);
      return;
    exception when lock_not_available then
      null;
    end;
    commit;
  end loop;
end $$;
