-- Wake readers when any watermark moves: one notification per commit that advances a
-- watermark, so subscriptions do not have to poll.
create function syncline_notify_watermark() returns trigger
  language plpgsql
  as $$
begin
  perform pg_notify('syncline_watermarks', new.node_index::text);
  return null;
end
$$;

create trigger sequencer_watermarks_notify
  after insert or update on sequencer_watermarks
  for each row execute function syncline_notify_watermark();
