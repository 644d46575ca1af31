alter table sequencer_message_ids drop column digest;
