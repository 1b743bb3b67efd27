//! Router options kept outside the service protos: a sidecar file in
//! protobuf text format (`router.v1.RouterOptionsFile`, see
//! `router/v1/options.proto`) and the [`Builder`](crate::Builder) methods
//! that set the same things.
//!
//! A setting here wins over the same `(router.v1.*)` option in the proto, so
//! a service proto can import nothing of the router and its clients in every
//! language never need `router/v1/options.proto`.

use std::collections::BTreeMap;
use std::path::Path;

use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage, Value};

use crate::ir::Strategy;
use crate::{EmbeddedFileResolver, Error, OPTIONS_PROTO_NAME};

/// The full name of the sidecar file's message.
pub const OPTIONS_FILE_MESSAGE: &str = "router.v1.RouterOptionsFile";

/// Router options of services, by fully qualified service name.
///
/// ```
/// use protoc_gen_router::RouterOptions;
///
/// let options = RouterOptions::parse(
///     r#"services {
///          name: "myservice.v1.Greeter"
///          default_strategy: STRATEGY_CONSISTENT_HASH
///          methods { name: "SayHello" tag: 10 route_key: "name" idempotent: true }
///        }"#,
///     "router.txtpb",
/// )?;
/// let greeter = options.service("myservice.v1.Greeter").expect("configured");
/// assert_eq!(greeter.methods["SayHello"].route_key.as_deref(), Some("name"));
/// # Ok::<(), protoc_gen_router::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouterOptions {
    services: BTreeMap<String, ServiceOptions>,
    /// Where each service's options came from (a file, or `Builder`), for errors.
    origins: BTreeMap<String, String>,
}

/// The router options of one service (its `(router.v1.*)` service option and
/// the options of its methods).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceOptions {
    /// As `(router.v1.default_strategy)`.
    pub default_strategy: Option<Strategy>,
    /// The options of the service's methods, by method name.
    pub methods: BTreeMap<String, MethodOptions>,
}

/// The router options of one method (its `(router.v1.*)` method options).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MethodOptions {
    /// As `(router.v1.tag)`.
    pub tag: Option<u32>,
    /// As `(router.v1.route_key)`.
    pub route_key: Option<String>,
    /// As `(router.v1.idempotent)`.
    pub idempotent: Option<bool>,
}

impl RouterOptions {
    /// No options: everything comes from the protos.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no service has options here.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Reads a sidecar file (`router.v1.RouterOptionsFile` in text format).
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a sidecar file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, Error> {
        let bad = |reason: String| Error::RouterOptions {
            origin: origin.to_owned(),
            reason,
        };
        let descriptor = options_pool()?
            .get_message_by_name(OPTIONS_FILE_MESSAGE)
            .ok_or_else(|| Error::Internal(format!("{OPTIONS_FILE_MESSAGE} is not embedded")))?;
        let message = DynamicMessage::parse_text_format(descriptor, text)
            .map_err(|e| bad(format!("not a {OPTIONS_FILE_MESSAGE} in text format: {e}")))?;

        let mut options = RouterOptions::new();
        for service in list(&message, "services") {
            let service = &service;
            let name = string(service, "name")
                .filter(|n| !n.is_empty())
                .ok_or_else(|| bad("a `services` entry has no `name`".into()))?;
            let name = name.trim_start_matches('.').to_owned();
            if options.services.contains_key(&name) {
                return Err(bad(format!("service `{name}` is listed twice")));
            }
            let mut entry = ServiceOptions::default();
            if let Some(Value::EnumNumber(n)) = field(service, "default_strategy") {
                entry.default_strategy = Some(Strategy::from_number(n).ok_or_else(|| {
                    bad(format!("service `{name}`: unknown default_strategy {n}"))
                })?);
            }
            for method in list(service, "methods") {
                let method = &method;
                let method_name = string(method, "name")
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        bad(format!("service `{name}`: a `methods` entry has no `name`"))
                    })?;
                let method_options = MethodOptions {
                    tag: match field(method, "tag") {
                        Some(Value::U32(tag)) => Some(tag),
                        _ => None,
                    },
                    route_key: string(method, "route_key"),
                    idempotent: match field(method, "idempotent") {
                        Some(Value::Bool(b)) => Some(b),
                        _ => None,
                    },
                };
                if entry
                    .methods
                    .insert(method_name.clone(), method_options)
                    .is_some()
                {
                    return Err(bad(format!(
                        "service `{name}`: method `{method_name}` is listed twice"
                    )));
                }
            }
            options.origins.insert(name.clone(), origin.to_owned());
            options.services.insert(name, entry);
        }
        Ok(options)
    }

    /// The options of service `full_name` (`myservice.v1.Greeter`), if any.
    pub fn service(&self, full_name: &str) -> Option<&ServiceOptions> {
        self.services.get(full_name)
    }

    /// The options of service `full_name`, created empty when absent.
    pub fn service_mut(&mut self, full_name: &str) -> &mut ServiceOptions {
        let name = full_name.trim_start_matches('.').to_owned();
        self.origins
            .entry(name.clone())
            .or_insert_with(|| "set in code".to_owned());
        self.services.entry(name).or_default()
    }

    /// The options of method `method` of service `service`, created empty
    /// when absent.
    pub fn method_mut(&mut self, service: &str, method: &str) -> &mut MethodOptions {
        self.service_mut(service)
            .methods
            .entry(method.to_owned())
            .or_default()
    }

    /// Adds `other`'s settings, which win where both set one.
    pub fn merge(&mut self, other: &RouterOptions) {
        for (name, service) in &other.services {
            if let Some(origin) = other.origins.get(name) {
                self.origins.insert(name.clone(), origin.clone());
            }
            let mine = self.service_mut(name);
            if service.default_strategy.is_some() {
                mine.default_strategy = service.default_strategy;
            }
            for (method, options) in &service.methods {
                let m = mine.methods.entry(method.clone()).or_default();
                m.tag = options.tag.or(m.tag);
                m.route_key = options.route_key.clone().or(m.route_key.take());
                m.idempotent = options.idempotent.or(m.idempotent);
            }
        }
    }

    /// Refuses options that name nothing real: a method the service does not
    /// have, or a service missing from a package being generated (a typo).
    /// Services of other packages are left alone, so one file can serve a
    /// whole repository whose packages are generated separately.
    pub(crate) fn check(
        &self,
        pool: &DescriptorPool,
        files_to_generate: &[String],
    ) -> Result<(), Error> {
        let packages: Vec<String> = files_to_generate
            .iter()
            .filter_map(|f| pool.get_file_by_name(f))
            .map(|f| f.package_name().to_owned())
            .collect();
        for (name, options) in &self.services {
            let origin = self.origins.get(name).map_or("set in code", String::as_str);
            let bad = |reason: String| Error::RouterOptions {
                origin: format!("{origin}: service `{name}`"),
                reason,
            };
            match pool.get_service_by_name(name) {
                Some(service) => {
                    for method in options.methods.keys() {
                        if !service.methods().any(|m| m.name() == method) {
                            let known: Vec<String> =
                                service.methods().map(|m| m.name().to_owned()).collect();
                            return Err(bad(format!(
                                "the service has no method `{method}` (its methods: {})",
                                known.join(", ")
                            )));
                        }
                    }
                }
                None => {
                    let package = name.rsplit_once('.').map_or("", |(p, _)| p);
                    if packages.iter().any(|p| p == package) {
                        return Err(bad(format!(
                            "package `{package}` has no such service among the files generated"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The embedded `router/v1/options.proto`, compiled.
fn options_pool() -> Result<DescriptorPool, Error> {
    let mut compiler =
        protox::Compiler::with_file_resolver(EmbeddedFileResolver::new().chain::<&Path>(&[]));
    compiler
        .open_file(OPTIONS_PROTO_NAME)
        .map_err(|e| Error::Internal(format!("the embedded {OPTIONS_PROTO_NAME}: {e}")))?;
    Ok(compiler.descriptor_pool())
}

fn field(message: &DynamicMessage, name: &str) -> Option<Value> {
    let field = message.descriptor().get_field_by_name(name)?;
    message
        .has_field(&field)
        .then(|| message.get_field(&field).into_owned())
}

fn string(message: &DynamicMessage, name: &str) -> Option<String> {
    match field(message, name) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn list(message: &DynamicMessage, name: &str) -> Vec<DynamicMessage> {
    match field(message, name) {
        Some(Value::List(items)) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::Message(m) => Some(m),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_every_setting_parses() {
        let options = RouterOptions::parse(
            "services { name: \"p.S\" default_strategy: STRATEGY_ROUND_ROBIN\n\
             methods { name: \"A\" tag: 12 route_key: \"k\" idempotent: true }\n\
             methods { name: \"B\" } }",
            "t",
        )
        .expect("parses");
        let s = options.service("p.S").expect("p.S");
        assert_eq!(s.default_strategy, Some(Strategy::RoundRobin));
        assert_eq!(
            s.methods["A"],
            MethodOptions {
                tag: Some(12),
                route_key: Some("k".into()),
                idempotent: Some(true)
            }
        );
        assert_eq!(s.methods["B"], MethodOptions::default());
    }

    #[test]
    fn bad_files_are_refused_naming_the_file() {
        for (text, expected) in [
            (
                "services { nam: \"x\" }",
                "router options t: not a router.v1.RouterOptionsFile",
            ),
            (
                "services { }",
                "router options t: a `services` entry has no `name`",
            ),
            (
                "services { name: \"a.S\" } services { name: \"a.S\" }",
                "router options t: service `a.S` is listed twice",
            ),
            (
                "services { name: \"a.S\" methods { name: \"M\" } methods { name: \"M\" } }",
                "router options t: service `a.S`: method `M` is listed twice",
            ),
        ] {
            let error = RouterOptions::parse(text, "t").expect_err(text).to_string();
            assert!(error.starts_with(expected), "{text}: {error}");
        }
    }

    #[test]
    fn later_settings_win_when_merged() {
        let mut a = RouterOptions::new();
        a.method_mut("p.S", "A").tag = Some(10);
        a.method_mut("p.S", "A").idempotent = Some(true);
        let mut b = RouterOptions::new();
        b.method_mut("p.S", "A").tag = Some(20);
        a.merge(&b);
        let m = &a.service("p.S").expect("p.S").methods["A"];
        assert_eq!((m.tag, m.idempotent), (Some(20), Some(true)));
    }
}
