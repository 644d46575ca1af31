drop table sequencer_lower_bound;
drop table sequencer_acknowledgements;
drop table sequencer_members;
