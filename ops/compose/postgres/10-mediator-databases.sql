-- One database per replicated node group, as in a real deployment: the mediator's replicas
-- share it, and it is not the sequencers' database. Runs once, on an empty data directory
-- (after `docker compose down -v`, or on the first `up`).
CREATE DATABASE mediator1 OWNER syncline;
