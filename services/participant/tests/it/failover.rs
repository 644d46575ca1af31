//! Failover of the participant leader.
