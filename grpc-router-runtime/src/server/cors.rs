//! Cross-origin access to the clients' listener, for gRPC-Web and Connect
//! clients in browsers on another origin: which origins may call, and the
//! preflight answer (`OPTIONS`) with the methods, headers and the cache time
//! browsers need (tower-http's CORS layer).
//!
//! Request headers are mirrored (a gRPC-Web client sends `content-type`,
//! `x-grpc-web`, `x-user-agent`, `grpc-timeout`, a Connect client
//! `connect-protocol-version` and `connect-timeout-ms`, and both whatever
//! metadata the application adds, `authorization` for a JWT among them), and every
//! response header is exposed, so that `grpc-status`, `grpc-message` and the
//! application's metadata reach the script. Credentials (cookies) are not
//! allowed: gRPC-Web does not use them.

use std::time::Duration;

use http::{HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};

/// Which browser origins may call the clients' listener, and for how long
/// a browser may keep a preflight answer.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Origins,
    max_age: Duration,
}

#[derive(Debug, Clone)]
enum Origins {
    Any,
    List(Vec<HeaderValue>),
}

/// An origin that cannot be one (not `scheme://host[:port]`, or not text a
/// header can hold).
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid CORS origin `{0}`: expected `scheme://host` or `scheme://host:port` (no path), or `*`"
)]
pub struct InvalidOrigin(pub String);

/// How long browsers keep a preflight answer unless told otherwise.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);

impl Cors {
    /// Allows the listed origins (`https://app.example.com`, exactly as a
    /// browser sends its `Origin`), or any origin if the list holds `*`.
    pub fn new<I, S>(origins: I) -> Result<Cors, InvalidOrigin>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Vec::new();
        for origin in origins {
            let origin = origin.as_ref().trim();
            if origin == "*" {
                return Ok(Cors {
                    origins: Origins::Any,
                    max_age: DEFAULT_MAX_AGE,
                });
            }
            list.push(parse_origin(origin)?);
        }
        Ok(Cors {
            origins: Origins::List(list),
            max_age: DEFAULT_MAX_AGE,
        })
    }

    /// How long browsers may keep a preflight answer ([`DEFAULT_MAX_AGE`]
    /// by default).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The layer answering preflights and adding the CORS headers.
    pub(crate) fn layer(&self) -> CorsLayer {
        let origins = match &self.origins {
            Origins::Any => AllowOrigin::any(),
            Origins::List(list) => AllowOrigin::list(list.iter().cloned()),
        };
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::POST, Method::GET, Method::OPTIONS])
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(ExposeHeaders::any())
            .max_age(self.max_age)
    }
}

fn parse_origin(origin: &str) -> Result<HeaderValue, InvalidOrigin> {
    let invalid = || InvalidOrigin(origin.to_owned());
    let (scheme, rest) = origin.split_once("://").ok_or_else(invalid)?;
    let scheme_ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let host_ok = !rest.is_empty() && !rest.contains(['/', '?', '#', ' ']);
    if !scheme_ok || !host_ok {
        return Err(invalid());
    }
    HeaderValue::from_str(origin).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_and_host_with_an_optional_port() {
        assert!(Cors::new(["https://app.example.com", "http://localhost:5173"]).is_ok());
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://",
            "https://a b",
            "://x",
        ] {
            let error = Cors::new([bad]).expect_err(bad);
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    #[test]
    fn a_star_allows_any_origin() {
        let cors = Cors::new(["https://a.example", "*"]).expect("valid");
        assert!(matches!(cors.origins, Origins::Any));
    }
}
