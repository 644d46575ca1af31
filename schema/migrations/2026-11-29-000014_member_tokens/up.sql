-- Sequencer member authentication: the SHA-256 of each member's bearer token (the token itself
-- is never stored). Null for members registered before tokens existed: they get one at their
-- next registration or rotation. Unique so a presented token names at most one member.
alter table sequencer_members add column token_sha256 bytea;
create unique index sequencer_members_token_sha256 on sequencer_members (token_sha256);
