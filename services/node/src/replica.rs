//! Replica manager (being written).
