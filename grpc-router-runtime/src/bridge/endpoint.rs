//! Checks a router endpoint before a bridge dials it, so a mistake such as a
//! missing scheme fails at once with a clear error instead of retrying
//! forever with `transport error`.

/// Why a router endpoint cannot be dialled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The endpoint has no `http://` or `https://` scheme.
    #[error(
        "router endpoint `{endpoint}` has no scheme: write `http://{endpoint}` \
         (or `https://{endpoint}` with BridgeConfig::tls)"
    )]
    MissingScheme {
        /// The endpoint as given.
        endpoint: String,
    },
    /// The endpoint's scheme is neither `http` nor `https`.
    #[error("router endpoint `{endpoint}`: scheme `{scheme}` is not http or https")]
    UnsupportedScheme {
        /// The endpoint as given.
        endpoint: String,
        /// Its scheme.
        scheme: String,
    },
    /// An `https://` endpoint without TLS settings.
    #[error(
        "router endpoint `{endpoint}` is https but the bridge has no TLS settings: \
         set BridgeConfig::tls"
    )]
    HttpsWithoutTls {
        /// The endpoint as given.
        endpoint: String,
    },
    /// The endpoint is not a valid URI with a host.
    #[error("router endpoint `{endpoint}` is not a valid URI: {reason}")]
    Invalid {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
}

/// Checks that `endpoint` is `http://host:port` or `https://host:port`
/// (`https` only when `tls` is set).
pub(super) fn check(endpoint: &str, tls: bool) -> Result<(), EndpointError> {
    let owned = || endpoint.to_owned();
    let uri: http::Uri = endpoint.parse().map_err(|e: http::uri::InvalidUri| {
        if endpoint.contains("://") {
            EndpointError::Invalid {
                endpoint: owned(),
                reason: e.to_string(),
            }
        } else {
            EndpointError::MissingScheme { endpoint: owned() }
        }
    })?;
    let Some(scheme) = uri.scheme_str() else {
        return Err(EndpointError::MissingScheme { endpoint: owned() });
    };
    match scheme {
        "http" => {}
        "https" if tls => {}
        "https" => return Err(EndpointError::HttpsWithoutTls { endpoint: owned() }),
        other => {
            return Err(EndpointError::UnsupportedScheme {
                endpoint: owned(),
                scheme: other.to_owned(),
            });
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(EndpointError::Invalid {
            endpoint: owned(),
            reason: "no host".to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_with_a_scheme_and_host_pass() {
        assert_eq!(check("http://127.0.0.1:50051", false), Ok(()));
        assert_eq!(check("https://router.example:443", true), Ok(()));
        assert_eq!(check("http://[::1]:50051", false), Ok(()));
    }

    #[test]
    fn a_missing_scheme_is_named_with_the_fix() {
        let error = check("127.0.0.1:50051", false).expect_err("no scheme");
        assert_eq!(
            error,
            EndpointError::MissingScheme {
                endpoint: "127.0.0.1:50051".into()
            }
        );
        assert!(error.to_string().contains("http://127.0.0.1:50051"));
        assert!(matches!(
            check("localhost:50051", false),
            Err(EndpointError::MissingScheme { .. })
        ));
    }

    #[test]
    fn other_mistakes_are_refused() {
        assert!(matches!(
            check("ftp://host:21", false),
            Err(EndpointError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            check("https://host:443", false),
            Err(EndpointError::HttpsWithoutTls { .. })
        ));
        assert!(matches!(
            check("http://", false),
            Err(EndpointError::Invalid { .. })
        ));
        assert!(check("http://host name:1", false).is_err());
    }
}
