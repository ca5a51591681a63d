//! Access-token validation against the homeserver (`GET /_matrix/client/v3/account/whoami`),
//! with short-lived caches for accepted and rejected tokens, plus static tokens from config.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::domain::UserId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no access token")]
    MissingToken,
    #[error("unknown access token")]
    UnknownToken,
    /// The homeserver could not be reached or timed out.
    #[error("homeserver unreachable: {0}")]
    HomeserverUnavailable(String),
    /// The homeserver answered with something we cannot use.
    #[error("homeserver answered unexpectedly: {0}")]
    HomeserverBadResponse(String),
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub user_id: UserId,
}

#[derive(Deserialize)]
struct WhoAmI {
    user_id: String,
}

/// Key for the caches: tokens are not kept in memory in the clear.
type TokenDigest = [u8; 32];

#[derive(Clone)]
pub struct Authenticator {
    client: reqwest::Client,
    whoami_url: String,
    static_tokens: Arc<HashMap<String, UserId>>,
    accepted: Cache<TokenDigest, UserId>,
    rejected: Cache<TokenDigest, ()>,
}

impl Authenticator {
    pub fn new(
        homeserver_url: &str,
        timeout: Duration,
        accepted_ttl: Duration,
        rejected_ttl: Duration,
        static_tokens: HashMap<String, UserId>,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mxcd/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("building an HTTP client with static settings cannot fail");
        Self {
            client,
            whoami_url: format!(
                "{}/_matrix/client/v3/account/whoami",
                homeserver_url.trim_end_matches('/')
            ),
            static_tokens: Arc::new(static_tokens),
            accepted: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(accepted_ttl)
                .build(),
            rejected: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(rejected_ttl)
                .build(),
        }
    }

    /// Resolve a token to the user it belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Requester, AuthError> {
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        if let Some(user_id) = self.static_tokens.get(token) {
            return Ok(Requester {
                user_id: user_id.clone(),
            });
        }
        let digest: TokenDigest = Sha256::digest(token.as_bytes()).into();
        if let Some(user_id) = self.accepted.get(&digest).await {
            return Ok(Requester { user_id });
        }
        if self.rejected.contains_key(&digest) {
            return Err(AuthError::UnknownToken);
        }
        match self.whoami(token).await {
            Ok(user_id) => {
                self.accepted.insert(digest, user_id.clone()).await;
                Ok(Requester { user_id })
            }
            Err(AuthError::UnknownToken) => {
                self.rejected.insert(digest, ()).await;
                Err(AuthError::UnknownToken)
            }
            Err(e) => Err(e),
        }
    }

    async fn whoami(&self, token: &str) -> Result<UserId, AuthError> {
        let response = self
            .client
            .get(&self.whoami_url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| AuthError::HomeserverUnavailable(e.to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(AuthError::UnknownToken);
        }
        if !status.is_success() {
            return Err(AuthError::HomeserverBadResponse(format!("status {status}")));
        }
        // whoami answers are tiny; refuse to read anything big.
        let body = read_limited(response, 64 * 1024).await?;
        let who: WhoAmI = serde_json::from_slice(&body)
            .map_err(|e| AuthError::HomeserverBadResponse(format!("whoami body: {e}")))?;
        UserId::parse(&who.user_id).map_err(|_| {
            AuthError::HomeserverBadResponse("whoami returned an invalid user id".into())
        })
    }
}

async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, AuthError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| AuthError::HomeserverUnavailable(e.to_string()))?
    {
        if body.len() + chunk.len() > limit {
            return Err(AuthError::HomeserverBadResponse(
                "whoami body too large".into(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
