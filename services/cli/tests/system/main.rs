//! System tests: real `syncline` processes (the binary of this package) on a real PostgreSQL,
//! kill -9, fault injection, HAProxy, the demo, the operations files. One test binary, to cut
//! link time.

mod chaos;
mod daemon_admin;
mod demo;
mod errors;
mod haproxy;
mod ledger_clients;
mod mediators;
mod ops_configs;
mod participants;
mod randomized;
mod sequencers;
mod subscriber_memory;
mod support;
mod synchronizer;
