//! Client authentication and authorization: a hook decides, per call,
//! whether the client may call the method (UNAUTHENTICATED,
//! PERMISSION_DENIED) and who it is. The router then passes the verified
//! identity to the instance in a header, and strips any copy the client
//! sent, so a handler can trust it.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::Status;

/// The header that carries the verified identity to the instance unless
/// [`ClientAuth::identity_header`] names another.
pub const IDENTITY_HEADER: &str = "x-router-identity";

/// What the authorization hook sees of a call.
#[derive(Debug)]
pub struct CallRequest<'a> {
    /// The service's full name, `pkg.Service`.
    pub service: &'a str,
    /// The method's name, `SayHello`.
    pub method: &'a str,
    /// The client's request headers (`authorization` ...).
    pub headers: &'a HeaderMap,
    /// The client's address.
    pub peer: &'a str,
    /// The certificates (DER, the leaf first) the client presented on a
    /// TLS listener with a client CA, which verified them in the handshake;
    /// empty over plain TCP or without a client certificate.
    pub peer_certificates: &'a [Bytes],
}

/// The TLS client certificates tonic recorded for a connection (DER, the
/// leaf first); empty over plain TCP or without a client certificate.
pub(crate) fn peer_certificates(extensions: &tonic::Extensions) -> Vec<Bytes> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .map(|certs| {
            certs
                .iter()
                .map(|c| Bytes::copy_from_slice(c.as_ref()))
                .collect()
        })
        .unwrap_or_default()
}

/// Decides whether a call may go on: `Ok(Some(identity))` passes the
/// identity to the instance, `Ok(None)` lets the call go on anonymously, an
/// error fails it with that status.
pub type AuthorizeCall =
    Arc<dyn Fn(&CallRequest<'_>) -> Result<Option<String>, Status> + Send + Sync>;

/// The router's client authorization.
#[derive(Clone)]
pub struct ClientAuth {
    /// The hook.
    pub authorize: AuthorizeCall,
    /// The header the identity reaches the instance in.
    pub identity_header: HeaderName,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("identity_header", &self.identity_header)
            .finish_non_exhaustive()
    }
}

impl ClientAuth {
    /// `authorize`, passing identities in [`IDENTITY_HEADER`].
    pub fn new(authorize: AuthorizeCall) -> Self {
        ClientAuth {
            authorize,
            identity_header: HeaderName::from_static(IDENTITY_HEADER),
        }
    }

    /// Runs the hook for a call; on success the headers carry the verified
    /// identity (or none) and never the client's own copy of the header.
    pub(crate) fn admit(
        &self,
        service: &str,
        method: &str,
        peer: &str,
        peer_certificates: &[Bytes],
        headers: &mut HeaderMap,
    ) -> Result<(), Status> {
        let identity = (self.authorize)(&CallRequest {
            service,
            method,
            headers,
            peer,
            peer_certificates,
        })?;
        headers.remove(&self.identity_header);
        if let Some(identity) = identity {
            headers.insert(self.identity_header.clone(), header_value(&identity));
        }
        Ok(())
    }
}

/// `text` as a header value, its bytes outside printable ASCII (and `%`)
/// percent-escaped.
fn header_value(text: &str) -> HeaderValue {
    let mut escaped = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::from_str(&escaped).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_copy_of_the_identity_header_never_reaches_the_instance() {
        let auth = ClientAuth::new(Arc::new(|call| {
            Ok(call
                .headers
                .get("authorization")
                .map(|_| "alice@example.com".to_owned()))
        }));
        let mut headers = HeaderMap::new();
        headers.insert(IDENTITY_HEADER, HeaderValue::from_static("root"));
        auth.admit("a.B", "M", "", &[], &mut headers)
            .expect("anonymous");
        assert!(
            headers.get(IDENTITY_HEADER).is_none(),
            "forged identity kept"
        );
        headers.insert("authorization", HeaderValue::from_static("Bearer x"));
        headers.insert(IDENTITY_HEADER, HeaderValue::from_static("root"));
        auth.admit("a.B", "M", "", &[], &mut headers)
            .expect("verified");
        assert_eq!(headers.get_all(IDENTITY_HEADER).iter().count(), 1);
        assert_eq!(headers[IDENTITY_HEADER], "alice@example.com");
    }

    #[test]
    fn a_refusal_is_the_hooks_status_and_odd_identities_are_escaped() {
        let auth = ClientAuth::new(Arc::new(|call| {
            if call.method == "Admin" {
                Err(Status::permission_denied("no"))
            } else {
                Ok(Some("ünï\ncode%".to_owned()))
            }
        }));
        let mut headers = HeaderMap::new();
        let denied = auth
            .admit("a.B", "Admin", "", &[], &mut headers)
            .expect_err("denied");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        auth.admit("a.B", "Get", "", &[], &mut headers).expect("ok");
        assert_eq!(headers[IDENTITY_HEADER], "%C3%BCn%C3%AF%0Acode%25");
    }
}
