//! The verified-token cache: tokens whose signature and claims were
//! checked, kept with their claims while valid, within one memory bound.

use std::sync::Arc;

use serde_json::Value;

/// The most bytes of tokens [`VerifiedTokens`] keeps, and the largest token
/// it keeps.
pub(super) const VERIFIED_TOKEN_BYTES: usize = 4 * 1024 * 1024;
pub(super) const LARGEST_CACHED_TOKEN: usize = 4 * 1024;

/// Tokens whose signature and claims were verified, with their claims, until
/// they expire: a client sends the same token on every call, and checking
/// its signature each time was most of the cost of JWT authentication
/// (HS256: about 5.6 µs a call). Only valid tokens are kept; the memory is
/// bounded by [`VERIFIED_TOKEN_BYTES`] for the whole router: a configuration
/// load builds one verifier, which every service shares
/// (`config::LoadedVerifier`); a reload builds a new one, so new keys or
/// settings start with an empty cache.
#[derive(Default)]
pub(super) struct VerifiedTokens {
    /// The bytes of the tokens kept, and each token's claims and the unix
    /// seconds between which it is valid.
    tokens: std::sync::RwLock<(usize, TokenMap)>,
}

/// Token → its claims and when it is valid.
type TokenMap = std::collections::HashMap<String, Verified>;

/// A verified token's claims and the unix seconds it is valid between
/// (leeway included).
struct Verified {
    claims: Arc<Value>,
    valid_from: u64,
    valid_until: u64,
}

impl VerifiedTokens {
    /// The claims of `token` if it was verified and is valid at `now` (unix
    /// seconds): not before its `nbf` (and `iat`), not after its `exp`, with
    /// the leeway.
    pub(super) fn get(&self, token: &str, now: u64) -> Option<Arc<Value>> {
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        tokens
            .1
            .get(token)
            .filter(|kept| (kept.valid_from..=kept.valid_until).contains(&now))
            .map(|kept| kept.claims.clone())
    }

    /// Keeps `token`, valid from `valid_from` until `valid_until` (unix
    /// seconds).
    pub(super) fn insert(
        &self,
        token: &str,
        claims: Arc<Value>,
        valid_from: u64,
        valid_until: u64,
        now: u64,
    ) {
        if token.len() > LARGEST_CACHED_TOKEN {
            return;
        }
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        let (bytes, map) = &mut *tokens;
        if *bytes + token.len() > VERIFIED_TOKEN_BYTES {
            map.retain(|_, kept| now <= kept.valid_until);
            *bytes = map.keys().map(String::len).sum();
            if *bytes + token.len() > VERIFIED_TOKEN_BYTES {
                map.clear();
                *bytes = 0;
            }
        }
        let kept = Verified {
            claims,
            valid_from,
            valid_until,
        };
        if map.insert(token.to_owned(), kept).is_none() {
            *bytes += token.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_cache_serves_a_token_only_inside_its_validity() {
        let cache = VerifiedTokens::default();
        let claims = Arc::new(json!({}));
        cache.insert("t", claims, 60, 100, 50);
        assert!(cache.get("t", 59).is_none(), "before its nbf");
        assert!(cache.get("t", 60).is_some());
        assert!(cache.get("t", 100).is_some());
        assert!(cache.get("t", 101).is_none(), "past its expiry");
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_no_token_too_large() {
        let cache = VerifiedTokens::default();
        let claims = Arc::new(json!({}));
        cache.insert("t", claims.clone(), 0, 100, 50);
        assert!(cache.get("t", 100).is_some());
        assert!(cache.get("t", 101).is_none(), "past its expiry");
        let big = "x".repeat(LARGEST_CACHED_TOKEN + 1);
        cache.insert(&big, claims.clone(), 0, 100, 50);
        assert!(cache.get(&big, 50).is_none(), "too large to keep");
        for i in 0..(2 * VERIFIED_TOKEN_BYTES / LARGEST_CACHED_TOKEN) {
            cache.insert(&format!("{i:04096}"), claims.clone(), 0, 100, 50);
        }
        let (bytes, map) = &*cache.tokens.read().expect("lock");
        assert!(*bytes <= VERIFIED_TOKEN_BYTES, "{bytes}");
        assert_eq!(*bytes, map.keys().map(String::len).sum::<usize>());
    }
}
