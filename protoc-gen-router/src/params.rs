//! Plugin parameters (`--router_opt=...`, buf `opt:`), parsed into [`Params`].

use std::str::FromStr;

use crate::Error;

/// The default path of the runtime crate in generated Rust code.
pub const DEFAULT_RUNTIME_CRATE: &str = "::router_runtime";

/// The plugin's options, parsed from the comma-separated `key=value` parameter.
///
/// ```
/// use protoc_gen_router::Params;
///
/// let params: Params = "rust=true,runtime_crate=::my_runtime".parse()?;
/// assert!(params.rust);
/// assert_eq!(params.runtime_crate, "::my_runtime");
/// # Ok::<(), protoc_gen_router::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// `rust=true|false`: also emit `<file>_router.rs` Rust glue per input
    /// file. Default `false`.
    pub rust: bool,
    /// `python=true|false`: also emit `<file>_router_bridge.py`, the service
    /// descriptors of the Python bridge (`bridges/python`). Default `false`.
    pub python: bool,
    /// `router_proto=true|false`: emit `<file>_router.proto`. Unset (`None`),
    /// it is written unless only Python glue is asked for (`python=true`
    /// without `rust=true`): the Python bridge encodes the register frames
    /// itself and never reads it. See [`Params::writes_router_proto`].
    pub router_proto: Option<bool>,
    /// `runtime_crate=<path>`: the Rust path of the runtime crate in generated
    /// code. Default `::router_runtime`.
    pub runtime_crate: String,
    /// `router_config=<file>`: router options from a sidecar file
    /// (`router.v1.RouterOptionsFile` in text format), relative to the
    /// directory protoc or buf runs in. They win over `(router.v1.*)` options
    /// in the protos, which then need not import `router/v1/options.proto`.
    pub router_config: Option<std::path::PathBuf>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            rust: false,
            python: false,
            router_proto: None,
            runtime_crate: DEFAULT_RUNTIME_CRATE.to_owned(),
            router_config: None,
        }
    }
}

impl FromStr for Params {
    type Err = Error;

    fn from_str(parameter: &str) -> Result<Self, Error> {
        let mut params = Params::default();
        for item in parameter
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            let bad = |reason: &str| Error::Parameter {
                parameter: item.to_owned(),
                reason: reason.to_owned(),
            };
            let Some((key, value)) = item.split_once('=') else {
                return Err(bad(
                    "expected `key=value` (known keys: rust, python, router_proto, runtime_crate, router_config)",
                ));
            };
            match key.trim() {
                "rust" => params.rust = parse_bool(value).ok_or_else(|| bad(BOOL))?,
                "python" => params.python = parse_bool(value).ok_or_else(|| bad(BOOL))?,
                "router_proto" => {
                    params.router_proto = Some(parse_bool(value).ok_or_else(|| bad(BOOL))?);
                }
                "runtime_crate" => {
                    let value = value.trim();
                    if syn::parse_str::<syn::Path>(value).is_err() {
                        return Err(bad("expected a Rust path such as `::router_runtime`"));
                    }
                    params.runtime_crate = value.to_owned();
                }
                "router_config" => {
                    let value = value.trim();
                    if value.is_empty() {
                        return Err(bad("expected the path of a router options file"));
                    }
                    params.router_config = Some(value.into());
                }
                _ => {
                    return Err(bad(
                        "unknown parameter (known keys: rust, python, router_proto, runtime_crate, router_config)",
                    ));
                }
            }
        }
        Ok(params)
    }
}

impl Params {
    /// Whether `<file>_router.proto` is written: as `router_proto` says,
    /// else unless only Python glue is asked for.
    ///
    /// ```
    /// use protoc_gen_router::Params;
    ///
    /// let python: Params = "python=true".parse()?;
    /// assert!(!python.writes_router_proto());
    /// let both: Params = "python=true,router_proto=true".parse()?;
    /// assert!(both.writes_router_proto());
    /// assert!(Params::default().writes_router_proto());
    /// # Ok::<(), protoc_gen_router::Error>(())
    /// ```
    pub fn writes_router_proto(&self) -> bool {
        self.router_proto.unwrap_or(self.rust || !self.python)
    }
}

const BOOL: &str = "expected `true` or `false`";

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!("".parse::<Params>().ok(), Some(Params::default()));
        let p: Result<Params, _> = "rust=true, runtime_crate=crate::rt".parse();
        assert!(
            matches!(p, Ok(Params { rust: true, python: false, router_proto: None, ref runtime_crate, router_config: None }) if runtime_crate == "crate::rt")
        );
        assert!(matches!(
            "python=true".parse::<Params>(),
            Ok(Params { python: true, .. })
        ));
        assert!("python=1".parse::<Params>().is_err());
        assert!("router_proto=maybe".parse::<Params>().is_err());
        assert!("rust=yes".parse::<Params>().is_err());
        assert!("colour=blue".parse::<Params>().is_err());
        assert!("rust".parse::<Params>().is_err());
        assert!("runtime_crate=not a path".parse::<Params>().is_err());
    }

    #[test]
    fn only_python_glue_leaves_the_router_proto_out_unless_asked() {
        let writes = |parameter: &str| {
            parameter
                .parse::<Params>()
                .map(|p| p.writes_router_proto())
                .ok()
        };
        assert_eq!(writes(""), Some(true));
        assert_eq!(writes("rust=true"), Some(true));
        assert_eq!(writes("python=true"), Some(false));
        assert_eq!(writes("python=true,rust=true"), Some(true));
        assert_eq!(writes("python=true,router_proto=true"), Some(true));
        assert_eq!(writes("rust=true,router_proto=false"), Some(false));
    }
}
