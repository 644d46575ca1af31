-- Tell readers which members got new events, so a subscription re-reads only when it may
-- have something to read. One notification per insert statement:
-- "<max ts>|<member ids, comma-separated>" or "<max ts>|*" when there are too many.
create function syncline_notify_events() returns trigger
  language plpgsql
  as $$
declare
  top bigint;
  ids integer[];
begin
  select max(ts) into top from new_events;
  select array_agg(distinct r) into ids from new_events, unnest(recipients) r;
  perform pg_notify('syncline_events', top::text || '|' ||
    case when cardinality(ids) > 400 then '*' else array_to_string(ids, ',') end);
  return null;
end
$$;

create trigger sequencer_events_notify
  after insert on sequencer_events
  referencing new table as new_events
  for each statement execute function syncline_notify_events();
