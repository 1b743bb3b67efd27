//! Authorization rules (`[[services."x".allow]]`): which methods which
//! callers (by identity, claims, or certificate SANs) may call.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sans::{San, SanPattern};

/// One authorization rule of a service: it allows a call when the method is
/// listed (or none are), and the caller's identity is listed (or none are),
/// and every claim pair matches (a claim that is an array matches when it
/// contains the value), and one of the client certificate's SANs matches a
/// `sans` pattern (or none are listed).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// Method names (`SayHello`); empty: every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Caller identities (the identity claim); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// Claims the token must carry, e.g. `{ role = "admin" }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, String>,
    /// Patterns of the client certificate's SANs (`spiffe://...`,
    /// `dns:<name>`, `email:<address>`, one `*` each at most); empty: any
    /// (or no) certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sans: Vec<SanPattern>,
}

impl AllowRule {
    pub(super) fn allows(
        &self,
        method: &str,
        identity: Option<&str>,
        claims: &Value,
        sans: &[San],
    ) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && (self.sans.is_empty() || SanPattern::first_match(&self.sans, sans).is_some())
            && (self.identities.is_empty()
                || identity.is_some_and(|id| self.identities.iter().any(|i| i == id)))
            && self
                .claims
                .iter()
                .all(|(name, wanted)| match claims.get(name) {
                    Some(Value::String(s)) => s == wanted,
                    Some(Value::Array(values)) => values.iter().any(|v| v.as_str() == Some(wanted)),
                    Some(Value::Bool(b)) => b.to_string() == *wanted,
                    Some(Value::Number(n)) => n.to_string() == *wanted,
                    _ => false,
                })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sans;
    use serde_json::json;

    #[test]
    fn rules_allow_by_method_identity_and_claim() {
        let rule = AllowRule {
            methods: vec!["Adjust".into()],
            claims: BTreeMap::from([("role".into(), "admin".into())]),
            ..AllowRule::default()
        };
        let admin = json!({"role": ["viewer", "admin"]});
        assert!(rule.allows("Adjust", Some("a"), &admin, &[]));
        assert!(!rule.allows("Delete", Some("a"), &admin, &[]));
        assert!(!rule.allows("Adjust", Some("a"), &json!({"role": "viewer"}), &[]));
        let named = AllowRule {
            identities: vec!["svc-batch".into()],
            ..AllowRule::default()
        };
        assert!(named.allows("Any", Some("svc-batch"), &json!({}), &[]));
        assert!(!named.allows("Any", None, &json!({}), &[]));
    }

    #[test]
    fn rules_allow_by_certificate_san() {
        let rule = AllowRule {
            methods: vec!["Adjust".into()],
            sans: vec![
                SanPattern::try_from("spiffe://corp/ns/batch/*".to_owned()).expect("pattern"),
            ],
            ..AllowRule::default()
        };
        let batch = [San {
            kind: sans::SanKind::Uri,
            value: "spiffe://corp/ns/batch/sa/nightly".into(),
        }];
        let web = [San {
            kind: sans::SanKind::Uri,
            value: "spiffe://corp/ns/web/sa/frontend".into(),
        }];
        assert!(rule.allows("Adjust", None, &Value::Null, &batch));
        assert!(!rule.allows("Adjust", None, &Value::Null, &web));
        assert!(!rule.allows("Adjust", None, &Value::Null, &[]));
        assert!(!rule.allows("Delete", None, &Value::Null, &batch));
    }
}
