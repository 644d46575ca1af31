-- The writer tells listeners itself, in the statement that appends a batch and moves its
-- watermark (pg_notify with a payload it builds), so no trigger runs per batch: the events
-- trigger (a transition table per insert) goes, and the watermark trigger fires only when a
-- node goes online or offline (going online also notifies explicitly, as the cap may move).
-- Payloads and channels are unchanged.
drop trigger sequencer_events_notify on sequencer_events;
drop function syncline_notify_events();

drop trigger sequencer_watermarks_notify on sequencer_watermarks;
create trigger sequencer_watermarks_notify_insert
  after insert on sequencer_watermarks
  for each row execute function syncline_notify_watermark();
create trigger sequencer_watermarks_notify_online
  after update on sequencer_watermarks
  for each row when (old.online is distinct from new.online) execute function syncline_notify_watermark();
