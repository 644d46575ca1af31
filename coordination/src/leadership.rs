//! Replica-group leadership (being written).
