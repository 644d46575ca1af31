drop trigger sequencer_watermarks_notify_online on sequencer_watermarks;
drop trigger sequencer_watermarks_notify_insert on sequencer_watermarks;
create trigger sequencer_watermarks_notify
  after insert or update on sequencer_watermarks
  for each row execute function syncline_notify_watermark();

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
