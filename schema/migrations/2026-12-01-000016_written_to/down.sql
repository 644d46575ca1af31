alter table sequencer_watermarks drop column written_to;
