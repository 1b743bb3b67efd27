//! Client authentication by JWT bearer tokens (`[auth.jwt]`) and
//! authorization rules per service and method (`[[services."x".allow]]`).
//!
//! A call must carry `authorization: Bearer <jwt>` signed by the configured
//! key (an HMAC secret from an environment variable, an RSA or EC public key
//! in PEM, or a JWKS file), with the configured issuer and audience, not
//! expired and already valid (`exp`, `nbf` and `iat` when present, each with
//! `leeway`). Otherwise it fails UNAUTHENTICATED saying why.
//! A service with `allow` rules admits only calls one of its rules allows
//! (PERMISSION_DENIED otherwise); a service without rules admits every
//! authenticated caller. The instance receives the token's identity claim
//! (`sub` by default) in `x-router-identity`; a client's own copy of that
//! header is dropped.
//!
//! On a clients' listener with a `client_ca` (mutual TLS), rules can also
//! match the client certificate's SANs (`sans`); without `[auth.jwt]` the
//! certificate is the client's credential and its first URI SAN (else DNS
//! name, else e-mail) is the identity the instance receives.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use router_runtime::router::{AuthorizeCall, CallRequest};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tonic::Status;

use crate::sans::{self, San};

mod allow;
mod verified_tokens;

pub use allow::AllowRule;
use verified_tokens::VerifiedTokens;

/// `[auth.jwt]`: how client tokens are verified.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// The required `iss` claim.
    pub issuer: String,
    /// The required `aud` claim (one of the token's audiences).
    pub audience: String,
    /// An environment variable holding an HMAC secret (HS256/384/512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_env: Option<String>,
    /// A PEM file with an RSA or EC public key (RS*/PS* or ES256/384).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
    /// A JWKS file (keys picked by the token's `kid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// Clock skew allowed on `exp`, `nbf` and a future `iat` (default 30s).
    #[serde(
        default = "default_leeway",
        with = "humantime_serde_compat",
        skip_serializing_if = "is_default_leeway"
    )]
    pub leeway: Duration,
    /// The claim that names the caller (default `sub`).
    #[serde(default = "default_identity_claim")]
    pub identity_claim: String,
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

fn is_default_leeway(d: &Duration) -> bool {
    *d == default_leeway()
}

fn default_identity_claim() -> String {
    "sub".to_owned()
}

mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration: {e}")))
    }
}

/// Where the verifier finds keys.
enum Keys {
    /// One key, with the validation every token gets (the key's
    /// algorithms, issuer, audience, leeway), built once rather than per
    /// call.
    One(DecodingKey, Box<Validation>),
    /// Keys by `kid`; the validation depends on the token's algorithm.
    Set(JwkSet),
}

/// The validation of `settings` for tokens signed with one of `algorithms`.
fn validation(settings: &JwtSettings, algorithms: Vec<Algorithm>) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.algorithms = algorithms;
    validation.leeway = settings.leeway.as_secs();
    validation.set_issuer(&[&settings.issuer]);
    validation.set_audience(&[&settings.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    // `nbf` and `iat` are checked after the signature, by `not_before`,
    // which can say when the token becomes valid.
    validation.validate_nbf = false;
    validation
}

/// Verifies tokens as `[auth.jwt]` says.
pub struct Verifier {
    keys: Keys,
    settings: JwtSettings,
    /// Tokens verified before and not yet expired.
    verified: VerifiedTokens,
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The unix second from which a token with `claims` is valid: its `nbf`
/// (not before) and its `iat` (issued at), when present, less the leeway;
/// or why it is not valid at `now`. The signature library checks `exp`;
/// these two are checked here, so a refusal can say when the token becomes
/// valid.
fn not_before(claims: &Value, now: u64, leeway: u64) -> Result<u64, String> {
    let mut valid_from = 0;
    for (claim, what) in [
        ("nbf", "the token is not valid before"),
        ("iat", "the token was issued in the future, at"),
    ] {
        let Some(value) = claims.get(claim) else {
            continue;
        };
        let at = value
            .as_u64()
            .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .ok_or_else(|| format!("the token's `{claim}` is not a number of seconds"))?;
        let from = at.saturating_sub(leeway);
        if now < from {
            return Err(format!(
                "{what} {} (`{claim}`, {} from now; leeway {})",
                humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(at)),
                humantime::format_duration(Duration::from_secs(at - now)),
                humantime::format_duration(Duration::from_secs(leeway))
            ));
        }
        valid_from = valid_from.max(from);
    }
    Ok(valid_from)
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.settings.issuer)
            .field("audience", &self.settings.audience)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// The verifier of `settings`, or the setting that is wrong and why.
    pub fn new(
        settings: &JwtSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, (&'static str, String)> {
        let sources = [
            settings.hmac_secret_env.is_some(),
            settings.public_key_file.is_some(),
            settings.jwks_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err((
                "auth.jwt",
                "needs exactly one of hmac_secret_env, public_key_file and jwks_file".to_owned(),
            ));
        }
        let keys = if let Some(var) = &settings.hmac_secret_env {
            let secret = env(var).filter(|s| !s.is_empty()).ok_or((
                "auth.jwt.hmac_secret_env",
                format!("the environment variable `{var}` is not set"),
            ))?;
            Keys::One(
                DecodingKey::from_secret(secret.as_bytes()),
                Box::new(validation(
                    settings,
                    vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
                )),
            )
        } else if let Some(path) = &settings.public_key_file {
            let pem = std::fs::read(path).map_err(|e| {
                (
                    "auth.jwt.public_key_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                Keys::One(
                    key,
                    Box::new(validation(
                        settings,
                        vec![
                            Algorithm::RS256,
                            Algorithm::RS384,
                            Algorithm::RS512,
                            Algorithm::PS256,
                            Algorithm::PS384,
                            Algorithm::PS512,
                        ],
                    )),
                )
            } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                Keys::One(
                    key,
                    Box::new(validation(
                        settings,
                        vec![Algorithm::ES256, Algorithm::ES384],
                    )),
                )
            } else {
                return Err((
                    "auth.jwt.public_key_file",
                    format!("{} holds no RSA or EC public key in PEM", path.display()),
                ));
            }
        } else {
            let path = settings
                .jwks_file
                .as_ref()
                .ok_or(("auth.jwt", String::new()))?;
            let text = std::fs::read_to_string(path).map_err(|e| {
                (
                    "auth.jwt.jwks_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let set: JwkSet = serde_json::from_str(&text).map_err(|e| {
                (
                    "auth.jwt.jwks_file",
                    format!("{} is not a JWKS: {e}", path.display()),
                )
            })?;
            Keys::Set(set)
        };
        Ok(Verifier {
            keys,
            settings: settings.clone(),
            verified: VerifiedTokens::default(),
        })
    }

    /// The claims of a valid `token`, or why it is not.
    pub fn verify(&self, token: &str) -> Result<Arc<Value>, String> {
        let now = unix_now();
        if let Some(claims) = self.verified.get(token, now) {
            return Ok(claims);
        }
        let claims = Arc::new(self.verify_signed(token)?);
        let leeway = self.settings.leeway.as_secs();
        let valid_from = not_before(&claims, now, leeway)?;
        // `exp` is required and was just checked; the token stays valid
        // until it passes, with the configured leeway.
        if let Some(exp) = claims.get("exp").and_then(Value::as_u64) {
            let valid_until = exp.saturating_add(leeway);
            self.verified
                .insert(token, claims.clone(), valid_from, valid_until, now);
        }
        Ok(claims)
    }

    /// Verifies `token`'s signature and claims.
    fn verify_signed(&self, token: &str) -> Result<Value, String> {
        let header = decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        // Per call, a single key costs no copy of the key or the validation;
        // only a JWKS builds them for the token's `kid` and algorithm.
        let from_set;
        let (key, validation) = match &self.keys {
            Keys::One(key, validation) => (key, &**validation),
            Keys::Set(set) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or("the token names no key (`kid`)")?;
                let jwk = set
                    .find(kid)
                    .ok_or_else(|| format!("no key `{kid}` in the JWKS"))?;
                let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key `{kid}`: {e}"))?;
                from_set = (key, validation(&self.settings, vec![header.alg]));
                (&from_set.0, &from_set.1)
            }
        };
        if !validation.algorithms.contains(&header.alg) {
            return Err(format!("algorithm {:?} does not fit the key", header.alg));
        }
        decode::<Value>(token, key, validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    "the token has expired".to_owned()
                }
                jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                    format!("the token is not for audience `{}`", self.settings.audience)
                }
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => {
                    format!("the token is not issued by `{}`", self.settings.issuer)
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => "bad signature".to_owned(),
                _ => format!("invalid token: {e}"),
            })
    }
}

/// The call check of one service: authentication by `verifier` (with
/// `[auth.jwt]`) or else by the client certificate the listener's
/// `client_ca` verified, then `rules` (none: every authenticated caller).
///
/// The identity passed to the instance is the token's identity claim, or
/// without a verifier the certificate's first URI SAN (else DNS, else
/// e-mail), written as `sans` patterns write it.
pub fn authorize_call(verifier: Option<Arc<Verifier>>, rules: Vec<AllowRule>) -> AuthorizeCall {
    // Certificates are parsed only when something reads them.
    let reads_certificates = verifier.is_none() || rules.iter().any(|r| !r.sans.is_empty());
    Arc::new(move |call: &CallRequest<'_>| {
        let (identity, claims) = match &verifier {
            Some(verifier) => {
                let (identity, claims) = verify_token(verifier, call)?;
                (identity, claims)
            }
            None => (None, Arc::new(Value::Null)),
        };
        let certificate_sans = if reads_certificates {
            sans::peer_sans(call.peer_certificates).map_err(|why| {
                Status::unauthenticated(format!(
                    "`{}`: the client certificate: {why}",
                    call.service
                ))
            })?
        } else {
            Vec::new()
        };
        let identity = if verifier.is_some() {
            identity
        } else if call.peer_certificates.is_empty() {
            return Err(Status::unauthenticated(format!(
                "`{}` needs a TLS client certificate",
                call.service
            )));
        } else {
            sans::primary(&certificate_sans).map(San::to_string)
        };
        if !rules.is_empty()
            && !rules
                .iter()
                .any(|r| r.allows(call.method, identity.as_deref(), &claims, &certificate_sans))
        {
            let seen = if reads_certificates {
                format!(" (certificate SANs {})", sans::list(&certificate_sans))
            } else {
                String::new()
            };
            return Err(Status::permission_denied(format!(
                "`{}`{seen} may not call `{}/{}`",
                identity.as_deref().unwrap_or("(no identity)"),
                call.service,
                call.method
            )));
        }
        Ok(identity)
    })
}

/// The identity claim and the claims of the call's valid bearer token.
fn verify_token(
    verifier: &Verifier,
    call: &CallRequest<'_>,
) -> Result<(Option<String>, Arc<Value>), Status> {
    let token = call
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Status::unauthenticated(format!(
                "`{}` needs `authorization: Bearer <token>`",
                call.service
            ))
        })?;
    let claims = verifier
        .verify(token.trim())
        .map_err(|why| Status::unauthenticated(format!("token refused: {why}")))?;
    let identity = claims
        .get(&verifier.settings.identity_claim)
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok((identity, claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn settings() -> JwtSettings {
        JwtSettings {
            issuer: "https://auth.test".into(),
            audience: "grpc-router".into(),
            hmac_secret_env: Some("JWT_SECRET".into()),
            public_key_file: None,
            jwks_file: None,
            leeway: default_leeway(),
            identity_claim: default_identity_claim(),
        }
    }

    fn verifier() -> Verifier {
        Verifier::new(&settings(), &|_| Some("s3cret".to_owned())).expect("valid")
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn token(claims: Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .expect("encodes")
    }

    /// What verifying one HS256 token costs, against what it cost when each
    /// call cloned the key and built its `Validation` (release build:
    /// `cargo test --release -p grpc-router --lib jwt_cost -- --ignored --nocapture`).
    #[test]
    #[ignore = "a timing, not a check"]
    fn jwt_cost() {
        let v = verifier();
        let good = token(
            json!({"sub": "router-bench", "role": "bench", "iss": "https://auth.test", "aud": "grpc-router", "iat": now(), "exp": now() + 3600}),
        );
        let rules = vec![AllowRule {
            claims: [("role".to_owned(), "bench".to_owned())].into(),
            ..AllowRule::default()
        }];
        let hook = authorize_call(Some(Arc::new(verifier())), rules);
        let headers = {
            let mut h = http::HeaderMap::new();
            h.insert(
                "authorization",
                format!("Bearer {good}").parse().expect("ascii"),
            );
            h
        };
        const N: u32 = 50_000;
        let time = |what: &str, f: &dyn Fn()| {
            for _ in 0..1000 {
                f();
            }
            let started = std::time::Instant::now();
            for _ in 0..N {
                f();
            }
            println!(
                "{what}: {:.2} µs",
                started.elapsed().as_secs_f64() * 1e6 / f64::from(N)
            );
        };
        let Keys::One(key, _) = &v.keys else {
            panic!("one key")
        };
        time(
            "per call: clone the key, build the validation, decode",
            &|| {
                let key = key.clone();
                let validation = validation(
                    &v.settings,
                    vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
                );
                let header = decode_header(&good).expect("header");
                assert!(validation.algorithms.contains(&header.alg));
                decode::<Value>(&good, &key, &validation).expect("valid");
            },
        );
        time(
            "verify, signature checked (key and validation built once)",
            &|| {
                v.verify_signed(&good).expect("valid");
            },
        );
        time("verify, a token verified before (the cache)", &|| {
            v.verify(&good).expect("valid");
        });
        time(
            "the whole call check (verify, identity, allow rule)",
            &|| {
                hook(&CallRequest {
                    service: "s.S",
                    method: "M",
                    headers: &headers,
                    peer: "127.0.0.1:1",
                    peer_certificates: &[],
                })
                .expect("allowed");
            },
        );
    }

    #[test]
    fn a_valid_token_gives_its_claims_and_bad_ones_say_why() {
        let v = verifier();
        let good = json!({"sub": "alice", "iss": "https://auth.test", "aud": "grpc-router", "exp": now() + 60});
        assert_eq!(
            v.verify(&token(good.clone())).expect("valid")["sub"],
            "alice"
        );
        let mut expired = good.clone();
        expired["exp"] = json!(now() - 120);
        assert_eq!(
            v.verify(&token(expired)).expect_err("expired"),
            "the token has expired"
        );
        let mut skewed = good.clone();
        skewed["exp"] = json!(now() - 10);
        assert!(v.verify(&token(skewed)).is_ok(), "within the leeway");
        let mut other_audience = good.clone();
        other_audience["aud"] = json!("billing");
        assert!(
            v.verify(&token(other_audience))
                .expect_err("aud")
                .contains("audience")
        );
        let forged = encode(
            &Header::default(),
            &good,
            &EncodingKey::from_secret(b"guess"),
        )
        .expect("encodes");
        assert_eq!(v.verify(&forged).expect_err("forged"), "bad signature");
        assert!(v.verify("not.a.jwt").is_err());
    }

    #[test]
    fn a_token_not_valid_yet_is_refused_saying_when_it_becomes_valid() {
        let v = verifier();
        let good = json!({"sub": "alice", "iss": "https://auth.test", "aud": "grpc-router", "exp": now() + 3 * 86_400});
        for (claim, ahead) in [("nbf", 3600), ("nbf", 86_400), ("iat", 3600)] {
            let mut early = good.clone();
            early[claim] = json!(now() + ahead);
            let token = token(early);
            for _ in 0..2 {
                let why = v.verify(&token).expect_err("not valid yet");
                let expected = if claim == "nbf" {
                    "not valid before"
                } else {
                    "issued in the future"
                };
                assert!(why.contains(expected), "{claim}: {why}");
                assert!(why.contains("leeway 30s"), "{why}");
            }
        }
        for claim in ["nbf", "iat"] {
            let mut skewed = good.clone();
            skewed[claim] = json!(now() + 10);
            assert!(
                v.verify(&token(skewed)).is_ok(),
                "{claim} within the leeway"
            );
        }
        let mut odd = good.clone();
        odd["nbf"] = json!("tomorrow");
        assert!(
            v.verify(&token(odd))
                .expect_err("not a number")
                .contains("nbf"),
            "a non-numeric nbf is refused"
        );
    }

    #[test]
    fn a_verified_token_is_served_from_the_cache() {
        let v = verifier();
        let good = token(
            json!({"sub": "alice", "iss": "https://auth.test", "aud": "grpc-router", "exp": now() + 600}),
        );
        let first = v.verify(&good).expect("valid");
        let again = v.verify(&good).expect("valid from the cache");
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second check is a cache hit"
        );
    }

    #[test]
    fn exactly_one_key_source_and_a_set_secret_are_required() {
        let mut both = settings();
        both.jwks_file = Some("/x".into());
        assert_eq!(
            Verifier::new(&both, &|_| None).expect_err("two").0,
            "auth.jwt"
        );
        let unset = Verifier::new(&settings(), &|_| None).expect_err("unset");
        assert_eq!(unset.0, "auth.jwt.hmac_secret_env");
        assert!(unset.1.contains("JWT_SECRET"), "{}", unset.1);
    }
}
