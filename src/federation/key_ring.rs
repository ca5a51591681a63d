//! Other servers' signing keys, fetched from their `/_matrix/key/v2/server`, checked
//! (right server, self-signed) and cached until `valid_until_ts`, but at most 7 days.
//! Only `verify_keys` are used: `old_verify_keys` are for old events, never requests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use ruma_common::CanonicalJsonObject;
use ruma_common::canonical_json::CanonicalJsonValue;
use ruma_common::serde::Base64;

use super::client::{FederationClient, FederationError};
use crate::domain::ServerName;

/// Milliseconds since the Unix epoch.
type Millis = i64;

#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyRingError {
    #[error(transparent)]
    Fetch(#[from] FederationError),
    #[error("{server}'s key document is invalid: {reason}")]
    Invalid { server: ServerName, reason: String },
    #[error("{server} has no current key {key_id}")]
    UnknownKey { server: ServerName, key_id: String },
}

/// The longest any fetched key is trusted without fetching it again.
const MAX_VALIDITY_MS: Millis = 7 * 24 * 60 * 60 * 1000;
/// A key id we do not know makes us fetch again, but not more often than this.
const MIN_REFETCH_MS: Millis = 30_000;
/// The largest key document read.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

#[derive(Debug)]
struct ServerKeys {
    /// Key id → unpadded base64 public key.
    keys: HashMap<String, String>,
    /// Trusted until (already capped at fetch time + 7 days).
    valid_until: Millis,
    fetched: Millis,
}

impl ServerKeys {
    fn usable(&self, key_id: &str, now: Millis) -> Option<&str> {
        (self.valid_until > now)
            .then(|| self.keys.get(key_id).map(String::as_str))
            .flatten()
    }
}

#[derive(Clone)]
pub struct KeyRing {
    client: FederationClient,
    cache: Cache<ServerName, Arc<ServerKeys>>,
    timeout: Duration,
}

impl KeyRing {
    pub fn new(client: FederationClient, timeout: Duration) -> Self {
        Self {
            client,
            cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_millis(MAX_VALIDITY_MS as u64))
                .build(),
            timeout,
        }
    }

    /// The public key `server` signs with under `key_id`, valid at `now`.
    pub async fn verify_key(
        &self,
        server: &ServerName,
        key_id: &str,
        now: Millis,
    ) -> Result<String, KeyRingError> {
        if let Some(known) = self.cache.get(server).await {
            if let Some(key) = known.usable(key_id, now) {
                return Ok(key.to_owned());
            }
            if now - known.fetched < MIN_REFETCH_MS && known.valid_until > now {
                return Err(KeyRingError::UnknownKey {
                    server: server.clone(),
                    key_id: key_id.to_owned(),
                });
            }
            self.cache.invalidate(server).await;
        }
        // Concurrent lookups of one server share one fetch.
        let keys = self
            .cache
            .try_get_with(server.clone(), self.fetch(server))
            .await
            .map_err(|e| (*e).clone())?;
        keys.usable(key_id, now)
            .map(str::to_owned)
            .ok_or_else(|| KeyRingError::UnknownKey {
                server: server.clone(),
                key_id: key_id.to_owned(),
            })
    }

    /// Fetch `server`'s current keys now (id → public key), bypassing the cache: for
    /// `mxcd federation check`.
    pub async fn fetch_now(
        &self,
        server: &ServerName,
    ) -> Result<Vec<(String, String)>, KeyRingError> {
        let keys = self.fetch(server).await?;
        let mut list: Vec<_> = keys.keys.clone().into_iter().collect();
        list.sort();
        Ok(list)
    }

    async fn fetch(&self, server: &ServerName) -> Result<Arc<ServerKeys>, KeyRingError> {
        let invalid = |reason: String| KeyRingError::Invalid {
            server: server.clone(),
            reason,
        };
        let mut res = self
            .client
            .get(server, "/_matrix/key/v2/server", false, self.timeout)
            .await?;
        if !res.status().is_success() {
            return Err(invalid(format!("status {}", res.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| invalid(e.to_string()))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(invalid("larger than 64 KiB".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let doc: CanonicalJsonObject =
            serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
        // Judged by the time it arrived, so keys expiring meanwhile are not taken.
        let keys =
            parse_document(server, &doc, chrono::Utc::now().timestamp_millis()).map_err(invalid)?;
        tracing::debug!(%server, keys = keys.keys.len(), valid_until = keys.valid_until, "fetched server keys");
        Ok(Arc::new(keys))
    }
}

/// Check a `/_matrix/key/v2/server` document of `server` and take its current keys.
fn parse_document(
    server: &ServerName,
    doc: &CanonicalJsonObject,
    now: Millis,
) -> Result<ServerKeys, String> {
    match doc.get("server_name") {
        Some(CanonicalJsonValue::String(name)) if name == server.as_str() => {}
        other => return Err(format!("server_name is {other:?}")),
    }
    let Some(CanonicalJsonValue::Integer(valid_until)) = doc.get("valid_until_ts") else {
        return Err("no valid_until_ts".into());
    };
    let valid_until = i64::from(*valid_until).min(now.saturating_add(MAX_VALIDITY_MS));
    if valid_until <= now {
        return Err("the keys have expired".into());
    }
    let Some(CanonicalJsonValue::Object(verify_keys)) = doc.get("verify_keys") else {
        return Err("no verify_keys".into());
    };
    let mut keys = HashMap::new();
    let mut public = ruma_signatures::PublicKeySet::new();
    for (id, entry) in verify_keys {
        let Some(CanonicalJsonValue::String(key)) = entry.as_object().and_then(|o| o.get("key"))
        else {
            return Err(format!("key {id} has no key"));
        };
        let parsed = Base64::parse(key).map_err(|e| format!("key {id}: {e}"))?;
        public.insert(id.clone(), parsed);
        keys.insert(id.clone(), key.clone());
    }
    if keys.is_empty() {
        return Err("no verify_keys".into());
    }
    // Self-signed by (at least one of) the keys it publishes. Signatures of others
    // (notaries) are not ours to check; the server's own must be there.
    let own = match doc.get("signatures") {
        Some(CanonicalJsonValue::Object(all)) => all.get(server.as_str()).cloned(),
        _ => None,
    }
    .ok_or("not signed by the server")?;
    let mut signed = doc.clone();
    signed.insert(
        "signatures".into(),
        CanonicalJsonValue::Object([(server.as_str().to_owned(), own)].into()),
    );
    let map = ruma_signatures::PublicKeyMap::from([(server.as_str().to_owned(), public)]);
    ruma_signatures::verify_json(&map, &signed).map_err(|e| format!("signature: {e}"))?;
    Ok(ServerKeys {
        keys,
        valid_until,
        fetched: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::ServerKey;

    const NOW: Millis = 1_700_000_000_000;

    fn name(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    fn document(key: &ServerKey, server: &str, valid_until: Millis) -> CanonicalJsonObject {
        key.server_keys(&name(server), valid_until)
    }

    #[test]
    fn a_self_signed_document_gives_its_keys() {
        let key = ServerKey::generate();
        let doc = document(&key, "other.org", NOW + 1000);
        let keys = parse_document(&name("other.org"), &doc, NOW).unwrap();
        assert_eq!(
            keys.usable(&key.key_id(), NOW),
            Some(key.public_key().as_str())
        );
        assert_eq!(keys.usable("ed25519:nope", NOW), None);
        assert_eq!(keys.usable(&key.key_id(), NOW + 1001), None, "expired");
    }

    #[test]
    fn validity_is_capped_at_seven_days() {
        let key = ServerKey::generate();
        let doc = document(&key, "other.org", NOW + 365 * MAX_VALIDITY_MS);
        let keys = parse_document(&name("other.org"), &doc, NOW).unwrap();
        assert_eq!(keys.valid_until, NOW + MAX_VALIDITY_MS);
    }

    #[test]
    fn bad_documents_are_refused() {
        let key = ServerKey::generate();
        let server = name("other.org");
        // Another server's document.
        let doc = document(&key, "third.org", NOW + 1000);
        assert!(parse_document(&server, &doc, NOW).is_err());
        // Expired.
        let doc = document(&key, "other.org", NOW - 1);
        assert!(
            parse_document(&server, &doc, NOW)
                .unwrap_err()
                .contains("expired")
        );
        // Tampered with after signing.
        let mut doc = document(&key, "other.org", NOW + 1000);
        doc.insert(
            "valid_until_ts".into(),
            CanonicalJsonValue::Integer((NOW + 2000).try_into().unwrap()),
        );
        assert!(
            parse_document(&server, &doc, NOW)
                .unwrap_err()
                .contains("signature")
        );
        // Signed by a key it does not publish, or not signed at all.
        let mut doc = document(&key, "other.org", NOW + 1000);
        let impostor = ServerKey::generate();
        doc.remove("signatures");
        let unsigned = doc.clone();
        impostor.sign(&server, &mut doc);
        assert!(parse_document(&server, &doc, NOW).is_err());
        assert!(parse_document(&server, &unsigned, NOW).is_err());
        let mut empty = unsigned;
        empty.insert(
            "signatures".into(),
            CanonicalJsonValue::Object(Default::default()),
        );
        assert!(parse_document(&server, &empty, NOW).is_err());
    }
}
