//! Registration credentials: bearer tokens whose SHA-256 the configuration
//! lists (the file holds no secret), and the subject alternative names an
//! instance's TLS client certificate must carry.

use std::sync::Arc;

use router_runtime::router::{Authorize, RegisterRequest};

use crate::config::TokenHash;
use crate::sans::{self, SanPattern};

/// The check of a service's registrations. With neither list configured,
/// every bridge may register. With `hashes`, its `Register` call must carry
/// `authorization: Bearer <token>` with a listed token's hash. With
/// `patterns`, it must come over mutual TLS with a client certificate (the
/// listener's `client_ca` verified it) one of whose SANs a pattern matches.
/// With both, both are required: each configured credential is a
/// requirement, so adding one never widens who may register.
///
/// The identity the instance id is bound to names what was proved:
/// `san:<the first matching SAN>`, `token sha256:<16 hex digits>`, or both
/// joined by `, `.
pub fn authorize(hashes: Vec<TokenHash>, patterns: Vec<SanPattern>) -> Option<Authorize> {
    if hashes.is_empty() && patterns.is_empty() {
        return None;
    }
    Some(Arc::new(move |request: &RegisterRequest<'_>| {
        let mut proved = Vec::with_capacity(2);
        if !patterns.is_empty() {
            proved.push(certificate(&patterns, request)?);
        }
        if !hashes.is_empty() {
            proved.push(token(&hashes, request)?);
        }
        Ok(Some(proved.join(", ")))
    }))
}

/// The bearer token check: `token sha256:<prefix of its hash>`.
fn token(hashes: &[TokenHash], request: &RegisterRequest<'_>) -> Result<String, tonic::Status> {
    let hello = request.hello;
    let Some(value) = request.metadata.get("authorization") else {
        return Err(tonic::Status::unauthenticated(format!(
            "registering `{}` needs `authorization: Bearer <token>`",
            hello.service
        )));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            tonic::Status::unauthenticated("`authorization` must be `Bearer <token>`")
        })?;
    let hash = TokenHash::of(token.trim());
    if hashes.contains(&hash) {
        // The instance id is bound to the token while registered (a
        // prefix of its hash names it in logs without revealing it).
        Ok(format!("token sha256:{}", &hash.hex()[..16]))
    } else {
        tracing::warn!(
            service = %hello.service,
            instance = %hello.instance_id,
            "registration refused: unknown token"
        );
        Err(tonic::Status::unauthenticated(format!(
            "the registration token of instance `{}` is not accepted for `{}`",
            hello.instance_id, hello.service
        )))
    }
}

/// The client certificate check: `san:<the first SAN a pattern matches>`.
fn certificate(
    patterns: &[SanPattern],
    request: &RegisterRequest<'_>,
) -> Result<String, tonic::Status> {
    let hello = request.hello;
    let refuse = |why: &str, sans: &str| {
        tracing::warn!(
            service = %hello.service,
            instance = %hello.instance_id,
            peer = request.peer,
            sans,
            "registration refused: {why}"
        );
    };
    if request.peer_certificates.is_empty() {
        refuse("no client certificate", "none");
        return Err(tonic::Status::unauthenticated(format!(
            "registering `{}` needs a TLS client certificate with an allowed SAN;              instance `{}` presented none",
            hello.service, hello.instance_id
        )));
    }
    let seen = sans::peer_sans(request.peer_certificates).map_err(|why| {
        refuse("unreadable client certificate", "unreadable");
        tonic::Status::unauthenticated(format!(
            "the client certificate of instance `{}` registering `{}`: {why}",
            hello.instance_id, hello.service
        ))
    })?;
    match SanPattern::first_match(patterns, &seen) {
        Some(san) => Ok(format!("san:{san}")),
        None => {
            let list = sans::list(&seen);
            refuse("certificate SAN not allowed", &list);
            Err(tonic::Status::permission_denied(format!(
                "the client certificate of instance `{}` (SANs {list}) may not register `{}`",
                hello.instance_id, hello.service
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> router_runtime::pb::Hello {
        router_runtime::pb::Hello {
            service: "a.B".to_owned(),
            instance_id: "i1".to_owned(),
            ..Default::default()
        }
    }

    fn with_token(token: &str) -> tonic::metadata::MetadataMap {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        md
    }

    fn check(
        authorize: &Authorize,
        metadata: &tonic::metadata::MetadataMap,
        certificates: &[bytes::Bytes],
    ) -> Result<Option<String>, tonic::Status> {
        authorize(&RegisterRequest {
            metadata,
            hello: &hello(),
            peer: "127.0.0.1:1",
            peer_certificates: certificates,
        })
    }

    fn certificate(sans: &[&str]) -> bytes::Bytes {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.strip_prefix("dns:") {
                Some(dns) => rcgen::SanType::DnsName((*dns).try_into().expect("ia5")),
                None => rcgen::SanType::URI((*s).try_into().expect("ia5")),
            })
            .collect();
        let key = rcgen::KeyPair::generate().expect("key");
        bytes::Bytes::copy_from_slice(params.self_signed(&key).expect("cert").der())
    }

    fn patterns(texts: &[&str]) -> Vec<SanPattern> {
        texts
            .iter()
            .map(|t| SanPattern::try_from((*t).to_owned()).expect("pattern"))
            .collect()
    }

    #[test]
    fn a_listed_token_registers_and_others_do_not() {
        let check_of = authorize(vec![TokenHash::of("s3cret")], Vec::new()).expect("a check");
        let identity = check(&check_of, &with_token("s3cret"), &[]).expect("accepted");
        assert_eq!(identity.as_deref(), Some("token sha256:1ec1c26b50d5d3c5"));
        let wrong = check(&check_of, &with_token("guess"), &[]).expect_err("refused");
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        let missing =
            check(&check_of, &tonic::metadata::MetadataMap::new(), &[]).expect_err("refused");
        assert!(
            missing.message().contains("needs `authorization"),
            "{}",
            missing.message()
        );
    }

    #[test]
    fn an_allowed_san_registers_as_itself_and_others_are_refused_naming_what_was_seen() {
        let check_of = authorize(
            Vec::new(),
            patterns(&["spiffe://corp/ns/prod/*", "dns:greeter.internal"]),
        )
        .expect("a check");
        let none = tonic::metadata::MetadataMap::new();
        let identity = check(
            &check_of,
            &none,
            &[certificate(&[
                "dns:other",
                "spiffe://corp/ns/prod/sa/greeter",
            ])],
        )
        .expect("allowed");
        assert_eq!(
            identity.as_deref(),
            Some("san:spiffe://corp/ns/prod/sa/greeter")
        );
        let denied = check(
            &check_of,
            &none,
            &[certificate(&["spiffe://corp/ns/dev/sa/greeter"])],
        )
        .expect_err("denied");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(
            denied
                .message()
                .contains("(SANs [spiffe://corp/ns/dev/sa/greeter]) may not register `a.B`"),
            "{}",
            denied.message()
        );
        let anonymous = check(&check_of, &none, &[]).expect_err("no certificate");
        assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
        assert!(
            anonymous.message().contains("presented none"),
            "{anonymous:?}"
        );
    }

    #[test]
    fn with_tokens_and_sans_both_are_required() {
        let check_of = authorize(
            vec![TokenHash::of("s3cret")],
            patterns(&["dns:greeter.internal"]),
        )
        .expect("a check");
        let cert = [certificate(&["dns:greeter.internal"])];
        let both = check(&check_of, &with_token("s3cret"), &cert).expect("both");
        assert_eq!(
            both.as_deref(),
            Some("san:dns:greeter.internal, token sha256:1ec1c26b50d5d3c5")
        );
        check(&check_of, &tonic::metadata::MetadataMap::new(), &cert).expect_err("no token");
        check(&check_of, &with_token("s3cret"), &[]).expect_err("no certificate");
    }

    #[test]
    fn the_hash_is_sha256_hex() {
        assert_eq!(
            TokenHash::of("abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
