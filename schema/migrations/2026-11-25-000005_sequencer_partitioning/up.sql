-- The total node count N that partitions sequencer timestamps. Every sequencer of one
-- database must use the same N, or their timestamps could collide; the first node records
-- it and later nodes with another N are refused while any sequencer runs.
create table sequencer_partitioning (
  single_row boolean primary key default true check (single_row),
  total_node_count integer not null
);
