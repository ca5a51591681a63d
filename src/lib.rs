//! mxcd: a standalone Matrix media repository.
//!
//! Layers, with dependencies pointing one way:
//! `routes` (HTTP) → `media` (rules) → `storage` (blobs) / `db` (metadata) → `domain` (types).

pub mod auth;
pub mod bench;
pub mod config;
pub mod db;
pub mod domain;
pub mod federation;
pub mod media;
pub mod routes;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod thumbnail;
