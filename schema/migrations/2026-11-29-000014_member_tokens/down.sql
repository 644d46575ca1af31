drop index sequencer_members_token_sha256;
alter table sequencer_members drop column token_sha256;
