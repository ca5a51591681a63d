//! Federation: the server's signing key (and, where configured, serving it at
//! `/_matrix/key/v2/server`).

mod keys;

pub use keys::{KeyError, ServerKey};
