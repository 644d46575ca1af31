//! The library part of the `syncline` binary: the composed configuration of a daemon
//! (`{ sequencers, mediators, participants }`) and its loader, shared with the system tests and
//! the fuzz targets.

pub mod config;
