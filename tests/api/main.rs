//! One integration-test binary: the real app over real HTTP, on SQLite + filesystem
//! and on Postgres + S3 (see `./scripts/test`, which starts both services).

mod async_upload;
mod auth;
mod download;
mod federation;
mod helpers;
mod process;
mod remote;
mod repo_contract;
mod routing;
mod sweeper;
mod thumbnail;
mod upload;
