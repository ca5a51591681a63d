//! Federation: the server's signing key (and, where configured, serving it at
//! `/_matrix/key/v2/server`), X-Matrix request signatures, other servers' keys, server
//! discovery, and requests to other servers.

mod client;
pub mod discovery;
mod guard;
mod key_ring;
mod keys;
mod media;
mod request_auth;

pub use client::{FederationClient, FederationError};
pub use guard::{Blocklist, DEFAULT_BLOCKLIST};
pub use key_ring::{KeyRing, KeyRingError};
pub use keys::{KeyError, ServerKey};
pub use media::{RemoteFile, RemoteMediaError};
pub use request_auth::{Credentials, RequestAuthError, authorization};
