-- An upper bound of what each node index wrote above its watermark: every event row of the
-- index with ts > watermark_ts has ts <= written_to. Every append raises it in the statement
-- that inserts the events; a truncation sets it to the watermark (nothing is left above).
-- Truncation and the dead-node sweep delete only (watermark_ts, written_to], a short range of
-- the primary key, instead of every event of every node above an old watermark.
-- NULL: not known (rows written before this column, or a fresh index): truncation scans
-- everything above the watermark once and sets it.
alter table sequencer_watermarks add column written_to bigint;
