//! Object key layout. Keys come from content hashes and server-generated ids only.

use object_store::path::Path;

use crate::domain::ContentHash;

pub(super) const BLOB_PREFIX: &str = "blobs";
pub(super) const STAGING_PREFIX: &str = "staging";

/// `blobs/<aa>/<bb>/<sha256 hex>`: two levels of fan-out keep directories small.
pub fn blob_key(hash: &ContentHash) -> Path {
    let hex = hash.to_hex();
    Path::from(format!("{BLOB_PREFIX}/{}/{}/{hex}", &hex[0..2], &hex[2..4]))
}

/// A fresh key for an upload in flight.
pub fn staging_key() -> Path {
    Path::from(format!(
        "{STAGING_PREFIX}/{}",
        uuid::Uuid::new_v4().simple()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_keys_fan_out_by_hash() {
        let h = ContentHash::from_bytes([0xab; 32]);
        assert_eq!(
            blob_key(&h).as_ref(),
            format!("blobs/ab/ab/{}", "ab".repeat(32))
        );
    }

    #[test]
    fn staging_keys_are_unique() {
        assert_ne!(staging_key(), staging_key());
    }
}
