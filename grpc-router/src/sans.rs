//! Certificate identities: the subject alternative names (SANs) of a TLS
//! peer's certificate, and the patterns the configuration matches them with
//! (`instance_sans` for registrations, `sans` in `allow` rules for clients).
//!
//! A SAN is written as text the way the configuration names it: a URI SAN
//! as itself (`spiffe://corp/ns/x/sa/greeter`), a DNS SAN as
//! `dns:greeter.internal`, an e-mail SAN as `email:ops@corp.example`. A
//! pattern is the same text, optionally with one `*` that matches any run of
//! characters (`spiffe://corp/ns/prod/*`, `dns:*.greeter.internal`); a URI
//! pattern may also be written `uri:<uri>`. DNS names compare without
//! regard to ASCII case; URIs and e-mail addresses compare exactly.

use std::fmt;

use serde::{Deserialize, Serialize};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The kinds of subject alternative name the router reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanKind {
    /// A URI (SPIFFE IDs are URIs).
    Uri,
    /// A DNS name.
    Dns,
    /// An e-mail address (RFC 822 name).
    Email,
}

/// One subject alternative name of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct San {
    /// What kind of name it is.
    pub kind: SanKind,
    /// The name as the certificate holds it.
    pub value: String,
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SanKind::Uri => f.write_str(&self.value),
            SanKind::Dns => write!(f, "dns:{}", self.value),
            SanKind::Email => write!(f, "email:{}", self.value),
        }
    }
}

/// The URI, DNS and e-mail SANs of a DER certificate, in the certificate's
/// order, or why it cannot be read. Other kinds (IP addresses, directory
/// names ...) are skipped.
pub fn sans_of(der: &[u8]) -> Result<Vec<San>, String> {
    let (_, certificate) = X509Certificate::from_der(der)
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let extension = certificate
        .subject_alternative_name()
        .map_err(|e| format!("the certificate's subjectAltName cannot be read: {e}"))?;
    let Some(extension) = extension else {
        return Ok(Vec::new());
    };
    Ok(extension
        .value
        .general_names
        .iter()
        .filter_map(|name| {
            let (kind, value) = match name {
                GeneralName::URI(v) => (SanKind::Uri, v),
                GeneralName::DNSName(v) => (SanKind::Dns, v),
                GeneralName::RFC822Name(v) => (SanKind::Email, v),
                _ => return None,
            };
            Some(San {
                kind,
                value: (*value).to_owned(),
            })
        })
        .collect())
}

/// The SANs of a peer's leaf certificate (the first of `certificates`);
/// none without a certificate.
pub fn peer_sans(certificates: &[bytes::Bytes]) -> Result<Vec<San>, String> {
    certificates
        .first()
        .map_or(Ok(Vec::new()), |leaf| sans_of(leaf))
}

/// The name that stands for a certificate's holder: its first URI SAN (a
/// SPIFFE ID), else its first DNS name, else its first e-mail address.
pub fn primary(sans: &[San]) -> Option<&San> {
    [SanKind::Uri, SanKind::Dns, SanKind::Email]
        .iter()
        .find_map(|kind| sans.iter().find(|s| s.kind == *kind))
}

/// `sans` as text for messages: `[spiffe://a, dns:b]`, or `none`.
pub fn list(sans: &[San]) -> String {
    if sans.is_empty() {
        return "none".to_owned();
    }
    let names: Vec<String> = sans.iter().map(San::to_string).collect();
    format!("[{}]", names.join(", "))
}

/// A configured SAN pattern (see the module's documentation), read from
/// its text; a malformed one is a configuration error saying why.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct SanPattern {
    text: String,
    kind: SanKind,
    /// The name before the `*` (or the whole name without one).
    prefix: String,
    /// The name after the `*`, when the pattern has one.
    suffix: Option<String>,
}

impl SanPattern {
    /// Whether `san` matches the pattern.
    pub fn matches(&self, san: &San) -> bool {
        if san.kind != self.kind {
            return false;
        }
        let fold = |s: &str| {
            if self.kind == SanKind::Dns {
                s.to_ascii_lowercase()
            } else {
                s.to_owned()
            }
        };
        let value = fold(&san.value);
        let prefix = fold(&self.prefix);
        match &self.suffix {
            None => value == prefix,
            Some(suffix) => {
                let suffix = fold(suffix);
                value.len() >= prefix.len() + suffix.len()
                    && value.starts_with(&prefix)
                    && value.ends_with(&suffix)
            }
        }
    }

    /// The first of `sans` that one of `patterns` matches.
    pub fn first_match<'a>(patterns: &[SanPattern], sans: &'a [San]) -> Option<&'a San> {
        sans.iter().find(|s| patterns.iter().any(|p| p.matches(s)))
    }
}

impl TryFrom<String> for SanPattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let (kind, name) = if let Some(name) = text.strip_prefix("dns:") {
            (SanKind::Dns, name)
        } else if let Some(name) = text.strip_prefix("email:") {
            (SanKind::Email, name)
        } else if let Some(name) = text.strip_prefix("uri:") {
            (SanKind::Uri, name)
        } else if text.contains("://") {
            (SanKind::Uri, text.as_str())
        } else {
            return Err(format!(
                "`{text}` is not a SAN pattern: write a URI (`spiffe://...`), \
                 `dns:<name>`, `email:<address>` or `uri:<uri>`"
            ));
        };
        if name.is_empty() {
            return Err(format!("`{text}` names nothing after its kind"));
        }
        if name.matches('*').count() > 1 {
            return Err(format!("`{text}` has more than one `*`"));
        }
        let (prefix, suffix) = match name.split_once('*') {
            Some((prefix, suffix)) => (prefix.to_owned(), Some(suffix.to_owned())),
            None => (name.to_owned(), None),
        };
        Ok(SanPattern {
            kind,
            prefix,
            suffix,
            text,
        })
    }
}

impl From<SanPattern> for String {
    fn from(pattern: SanPattern) -> String {
        pattern.text
    }
}

impl fmt::Display for SanPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn pattern(text: &str) -> SanPattern {
        SanPattern::try_from(text.to_owned()).expect("a pattern")
    }

    fn san(kind: SanKind, value: &str) -> San {
        San {
            kind,
            value: value.to_owned(),
        }
    }

    #[test]
    fn exact_and_wildcard_patterns_match_their_kind_only() {
        let spiffe = san(SanKind::Uri, "spiffe://corp/ns/prod/sa/greeter");
        assert!(pattern("spiffe://corp/ns/prod/sa/greeter").matches(&spiffe));
        assert!(pattern("uri:spiffe://corp/ns/prod/sa/greeter").matches(&spiffe));
        assert!(pattern("spiffe://corp/ns/prod/*").matches(&spiffe));
        assert!(pattern("spiffe://corp/*/sa/greeter").matches(&spiffe));
        assert!(!pattern("spiffe://corp/ns/dev/*").matches(&spiffe));
        assert!(!pattern("spiffe://corp/ns/prod/sa/greeter2").matches(&spiffe));
        assert!(!pattern("dns:*").matches(&spiffe), "kinds never cross");

        let dns = san(SanKind::Dns, "Greeter.Internal");
        assert!(
            pattern("dns:greeter.internal").matches(&dns),
            "DNS ignores case"
        );
        assert!(pattern("dns:*.internal").matches(&dns));
        assert!(!pattern("dns:*.greeter.internal").matches(&dns));
        assert!(!pattern("dns:greeter.internal.evil").matches(&dns));

        let email = san(SanKind::Email, "ops@corp.example");
        assert!(pattern("email:*@corp.example").matches(&email));
        assert!(!pattern("email:Ops@corp.example").matches(&email));
        // The prefix and suffix may not overlap: `ab*ba` needs four characters.
        assert!(!pattern("dns:ab*ba").matches(&san(SanKind::Dns, "aba")));
    }

    #[test]
    fn malformed_patterns_say_why() {
        for (text, why) in [
            ("greeter.internal", "is not a SAN pattern"),
            ("dns:", "names nothing"),
            ("dns:*.*.internal", "more than one `*`"),
        ] {
            let e = SanPattern::try_from(text.to_owned()).expect_err(text);
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn a_certificates_sans_are_read_in_order_and_the_uri_stands_for_it() {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![
            SanType::DnsName("greeter.internal".try_into().expect("ia5")),
            SanType::URI("spiffe://corp/sa/greeter".try_into().expect("ia5")),
            SanType::Rfc822Name("ops@corp.example".try_into().expect("ia5")),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let sans = sans_of(cert.der()).expect("parsed");
        assert_eq!(
            list(&sans),
            "[dns:greeter.internal, spiffe://corp/sa/greeter, email:ops@corp.example]"
        );
        assert_eq!(
            primary(&sans).map(San::to_string).as_deref(),
            Some("spiffe://corp/sa/greeter")
        );
        assert!(sans_of(b"\x30\x03der").is_err());
        assert_eq!(list(&peer_sans(&[]).expect("none")), "none");
    }
}
