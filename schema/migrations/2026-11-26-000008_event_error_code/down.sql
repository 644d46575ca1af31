update sequencer_events set error_message = error_code || ': ' || error_message
 where kind = 'error' and error_code is not null;

alter table sequencer_events drop column error_code;
