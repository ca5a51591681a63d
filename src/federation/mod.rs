//! Federation: the server's signing key (and, where configured, serving it at
//! `/_matrix/key/v2/server`), and X-Matrix request signatures.

mod keys;
mod request_auth;

pub use keys::{KeyError, ServerKey};
pub use request_auth::{Credentials, RequestAuthError, authorization};
