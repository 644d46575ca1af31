-- The digest of what a claimed send carried (sha256 of its encoded envelopes and
-- recipients), so that a resend with the same (sender, message id) is told apart from a
-- different send reusing the id: the first gets the original timestamp, the second is
-- refused. Null only for claims written before this column existed.
alter table sequencer_message_ids add column digest bytea;
