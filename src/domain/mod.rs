//! Parse-don't-validate types. Nothing outside `routes` ever handles an unchecked
//! identifier: a value of one of these types is valid by construction.

mod content_hash;
mod content_type;
mod file_name;
mod media_id;
mod mxc;
mod server_name;
mod thumbnail_spec;
mod user_id;

pub use content_hash::ContentHash;
pub use content_type::ContentType;
pub use file_name::FileName;
pub use media_id::MediaId;
pub use mxc::Mxc;
pub use server_name::ServerName;
pub use thumbnail_spec::{CropRect, Method, Plan, ThumbnailSpec};
pub use user_id::UserId;

/// Why a piece of user input was rejected. The message is safe to show to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub &'static str);
