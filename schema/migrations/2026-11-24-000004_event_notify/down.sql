drop trigger sequencer_events_notify on sequencer_events;
drop function syncline_notify_events();
