drop table leadership;
drop table sequencer_message_ids;
drop table sequencer_payloads;
drop table sequencer_event_recipients;
drop table sequencer_events;
drop table sequencer_watermarks;
drop function syncline_now_micros();
