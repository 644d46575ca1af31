drop table sequencer_partitioning;
