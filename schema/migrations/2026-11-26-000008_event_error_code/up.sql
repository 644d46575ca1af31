-- The typed code of an error event (e.g. UNKNOWN_RECIPIENTS), apart from its message, so
-- that readers never parse it back out of the text. Error events written before this
-- column existed carried the code as a "CODE: " prefix of the message; they are split here.
alter table sequencer_events add column error_code text;

update sequencer_events
   set error_code = split_part(error_message, ': ', 1),
       error_message = substr(error_message, strpos(error_message, ': ') + 2)
 where kind = 'error' and error_code is null and strpos(error_message, ': ') > 0;
