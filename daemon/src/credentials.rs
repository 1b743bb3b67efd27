//! Registration credentials: bearer tokens whose SHA-256 the configuration
//! lists (the file holds no secret).

use std::sync::Arc;

use router_runtime::router::Authorize;

use crate::config::TokenHash;

/// The check of a service's registrations: with no hash configured, every
/// bridge may register; otherwise its `Register` call must carry
/// `authorization: Bearer <token>` with a listed token's hash.
pub fn authorize(hashes: Vec<TokenHash>) -> Option<Authorize> {
    if hashes.is_empty() {
        return None;
    }
    Some(Arc::new(move |metadata, hello| {
        let Some(value) = metadata.get("authorization") else {
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
            Ok(Some(format!("token sha256:{}", &hash.hex()[..16])))
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
    }))
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

    #[test]
    fn a_listed_token_registers_and_others_do_not() {
        let check = authorize(vec![TokenHash::of("s3cret")]).expect("a check");
        let identity = check(&with_token("s3cret"), &hello()).expect("accepted");
        assert_eq!(identity.as_deref(), Some("token sha256:1ec1c26b50d5d3c5"));
        let wrong = check(&with_token("guess"), &hello()).expect_err("refused");
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        let missing = check(&tonic::metadata::MetadataMap::new(), &hello()).expect_err("refused");
        assert!(
            missing.message().contains("needs `authorization"),
            "{}",
            missing.message()
        );
    }

    #[test]
    fn no_hash_means_no_check() {
        assert!(authorize(Vec::new()).is_none());
    }

    #[test]
    fn the_hash_is_sha256_hex() {
        assert_eq!(
            TokenHash::of("abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
