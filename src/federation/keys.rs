//! The server's ed25519 signing key, in Synapse's signing-key file format: one line
//! `ed25519 <version> <unpadded base64 of the 32-byte seed>`. Operators point mxcd at
//! the homeserver's own key file, or let mxcd create one.

use std::path::Path;

use rand::{Rng, RngCore};
use ruma_common::CanonicalJsonObject;
use ruma_common::canonical_json::{CanonicalJsonValue, to_canonical_value};
use ruma_common::serde::Base64;
use ruma_signatures::Ed25519KeyPair;

use crate::domain::ServerName;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key file {path}: {reason}")]
    File { path: String, reason: String },
}

/// The server's signing key.
pub struct ServerKey {
    pair: Ed25519KeyPair,
    seed: [u8; 32],
    version: String,
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl ServerKey {
    /// Read the key at `path`, creating a new one there first if the file does not
    /// exist.
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        let fail = |reason: String| KeyError::File {
            path: path.display().to_string(),
            reason,
        };
        if !path.exists() {
            let key = Self::generate();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
            }
            std::fs::write(path, key.to_synapse_format()).map_err(|e| fail(e.to_string()))?;
            tracing::info!(path = %path.display(), key_id = %key.key_id(), "created a signing key");
            return Ok(key);
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        Self::parse(&text).map_err(fail)
    }

    /// Parse Synapse's format; the first key in the file is used.
    pub fn parse(text: &str) -> Result<Self, String> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or("the file is empty")?;
        let mut fields = line.split_whitespace();
        let (Some(algorithm), Some(version), Some(seed), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err("expected `ed25519 <version> <base64 key>`".into());
        };
        if algorithm != "ed25519" {
            return Err(format!("unsupported algorithm {algorithm:?}"));
        }
        if version.is_empty()
            || !version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(format!("invalid key version {version:?}"));
        }
        let seed: [u8; 32] = Base64::<ruma_common::serde::base64::Standard>::parse(seed)
            .map_err(|e| format!("key is not base64: {e}"))?
            .as_bytes()
            .try_into()
            .map_err(|_| "key is not 32 bytes".to_owned())?;
        Ok(Self::from_seed(seed, version.to_owned()))
    }

    fn from_seed(seed: [u8; 32], version: String) -> Self {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let der = ed25519_dalek::SigningKey::from_bytes(&seed)
            .to_pkcs8_der()
            .expect("an ed25519 key always encodes");
        let pair = Ed25519KeyPair::from_der(der.as_bytes(), version.clone())
            .expect("a freshly encoded key always parses");
        Self {
            pair,
            seed,
            version,
        }
    }

    /// A new random key, with a version like Synapse's (`a_` and four characters).
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let suffix: String = (&mut rng)
            .sample_iter(rand::distr::Alphanumeric)
            .take(4)
            .map(char::from)
            .collect();
        Self::from_seed(seed, format!("a_{suffix}"))
    }

    /// The key in Synapse's file format.
    pub fn to_synapse_format(&self) -> String {
        format!(
            "ed25519 {} {}\n",
            self.version,
            Base64::<ruma_common::serde::base64::Standard, _>::new(self.seed.as_slice())
        )
    }

    pub(super) fn pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    /// `ed25519:<version>`.
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.version)
    }

    /// The public key, unpadded base64, as published.
    pub fn public_key(&self) -> String {
        Base64::<ruma_common::serde::base64::Standard, _>::new(self.pair.public_key().as_slice())
            .to_string()
    }

    /// Sign `object` as `server_name` (adds to its `signatures`).
    pub fn sign(&self, server_name: &ServerName, object: &mut CanonicalJsonObject) {
        ruma_signatures::sign_json(server_name.as_str(), &self.pair, object)
            .expect("signing an object cannot fail");
    }

    /// The signed `/_matrix/key/v2/server` response, valid until `valid_until_ms`.
    pub fn server_keys(
        &self,
        server_name: &ServerName,
        valid_until_ms: i64,
    ) -> CanonicalJsonObject {
        let value = to_canonical_value(serde_json::json!({
            "server_name": server_name.as_str(),
            "valid_until_ts": valid_until_ms,
            "verify_keys": { self.key_id(): { "key": self.public_key() } },
            "old_verify_keys": {},
        }))
        .expect("the key response is valid canonical JSON");
        let CanonicalJsonValue::Object(mut object) = value else {
            unreachable!("a JSON object stays an object");
        };
        self.sign(server_name, &mut object);
        object
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed of the ed25519 test vector (RFC 8032, test 1) in Synapse's format.
    const SYNAPSE_KEY: &str = "ed25519 a_test nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A\n";
    /// Its public key (RFC 8032), unpadded base64.
    const PUBLIC: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn synapse_key_files_are_read_and_written() {
        let key = ServerKey::parse(SYNAPSE_KEY).unwrap();
        assert_eq!(key.key_id(), "ed25519:a_test");
        assert_eq!(key.public_key(), PUBLIC);
        assert_eq!(key.to_synapse_format(), SYNAPSE_KEY);
    }

    #[test]
    fn bad_key_files_are_refused_with_a_reason() {
        for (text, why) in [
            ("", "empty"),
            ("ed25519 a_test", "expected"),
            (
                "rsa a_test nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
                "algorithm",
            ),
            (
                "ed25519 a-b nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
                "version",
            ),
            ("ed25519 a_test not*base64", "base64"),
            ("ed25519 a_test AAAA", "32 bytes"),
        ] {
            let err = ServerKey::parse(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn generated_keys_survive_a_round_trip() {
        let key = ServerKey::generate();
        assert!(key.key_id().starts_with("ed25519:a_"));
        let again = ServerKey::parse(&key.to_synapse_format()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(again.key_id(), key.key_id());
    }

    #[test]
    fn the_key_response_is_signed_by_the_key_it_publishes() {
        let key = ServerKey::parse(SYNAPSE_KEY).unwrap();
        let server = ServerName::parse("hs1.test").unwrap();
        let response = key.server_keys(&server, 1_700_000_000_000);
        let mut keys = ruma_signatures::PublicKeySet::new();
        keys.insert(key.key_id(), Base64::parse(PUBLIC).unwrap());
        let map = ruma_signatures::PublicKeyMap::from([("hs1.test".to_owned(), keys)]);
        ruma_signatures::verify_json(&map, &response).unwrap();
        assert_eq!(
            response.get("valid_until_ts"),
            Some(&CanonicalJsonValue::Integer(
                1_700_000_000_000i64.try_into().unwrap()
            ))
        );
    }
}
