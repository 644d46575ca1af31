-- Each participant's replicas share a database of their own (not the sequencers', not the
-- mediator's). Runs once, on an empty data directory, like 10-mediator-databases.sql.
CREATE DATABASE participant1 OWNER syncline;
CREATE DATABASE participant2 OWNER syncline;
