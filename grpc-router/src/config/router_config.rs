//! The router settings (`RouterConfig`) a configuration gives each
//! service.

use std::collections::BTreeMap;
use std::sync::Arc;

use router_runtime::router::{CallRequest, ClientAuth, NamedMethod, RouterConfig};

use super::Config;
use super::policies::OutlierSetting;
use super::service::ServiceSettings;

impl Config {
    /// The router settings of services not named in `services`.
    pub fn default_router_config(&self) -> RouterConfig {
        self.router_config(&self.defaults)
    }

    /// The router settings of each named service.
    pub fn service_router_configs(&self) -> Vec<(String, RouterConfig)> {
        self.services
            .iter()
            .map(|(name, s)| {
                let mut config = self.router_config(&s.over(&self.defaults));
                config.named_methods = named_methods(name, s);
                (name.clone(), config)
            })
            .collect()
    }

    /// Warnings about settings for methods a service does not have, for
    /// the services whose methods `known` lists (by full service name).
    /// `[defaults.methods.X]` applies to every service that has `X`, so it
    /// is not checked.
    pub fn method_warnings(&self, known: &BTreeMap<String, Vec<String>>) -> Vec<String> {
        self.services
            .iter()
            .filter_map(|(name, s)| {
                let methods = known.get(name)?;
                Some(router_runtime::router::unknown_method_warnings(
                    name,
                    &named_methods(name, s),
                    methods.iter().map(String::as_str),
                ))
            })
            .flatten()
            .collect()
    }

    /// The call check of a service with `settings`: none without
    /// `[auth.jwt]` or a client CA on the clients' listener; fails closed if
    /// the key cannot be loaded any more.
    fn client_auth(&self, settings: &ServiceSettings) -> Option<ClientAuth> {
        let Some(jwt) = self.auth.jwt.as_ref() else {
            // Without JWTs, clients of a mutual TLS listener are named by
            // their certificates (and `sans` rules decide on them).
            self.clients_client_ca()?;
            return Some(ClientAuth::new(crate::jwt::authorize_call(
                None,
                settings.allow.clone(),
            )));
        };
        let verifier = match self.jwt_verifier.get() {
            Some(verifier) => Ok(verifier.clone()),
            // A configuration not loaded by `Config::parse` (built in code):
            // a verifier of its own, with the key from the process's
            // environment.
            None => crate::jwt::Verifier::new(jwt, &|k| std::env::var(k).ok()).map(Arc::new),
        };
        let authorize = match verifier {
            Ok(verifier) => crate::jwt::authorize_call(Some(verifier), settings.allow.clone()),
            Err((setting, why)) => {
                let message = format!("{setting}: {why}");
                Arc::new(move |_: &CallRequest<'_>| {
                    Err(tonic::Status::unavailable(message.clone()))
                })
            }
        };
        Some(ClientAuth::new(authorize))
    }

    fn router_config(&self, settings: &ServiceSettings) -> RouterConfig {
        let base = RouterConfig::default();
        let tokens = settings
            .tokens_sha256
            .clone()
            .unwrap_or_else(|| self.registrations.tokens_sha256.clone());
        let instance_sans = settings
            .instance_sans
            .clone()
            .unwrap_or_else(|| self.registrations.instance_sans.clone());
        RouterConfig {
            router_id: self.router_id(),
            fleet: Some(self.cluster_state.fleet()),
            strategy: settings.strategy,
            route_key_header: settings.route_key_header.clone(),
            max_message_size: settings
                .max_request_message_bytes
                .unwrap_or(base.max_message_size),
            max_response_message_size: settings
                .max_response_message_bytes
                .unwrap_or(base.max_response_message_size),
            heartbeat_interval: settings
                .heartbeat_interval
                .unwrap_or(base.heartbeat_interval),
            heartbeat_timeout: settings.heartbeat_timeout.unwrap_or(base.heartbeat_timeout),
            max_queued_bytes: self.limits.max_queued_bytes,
            max_partial_response_bytes: self.limits.max_partial_response_bytes,
            authorize: crate::credentials::authorize(tokens, instance_sans),
            deadlines: settings.deadlines(),
            splits: settings.splits(),
            rate_limits: settings.rate_limits(),
            concurrency: settings.concurrency_limits(),
            client_auth: self.client_auth(settings),
            retries: settings.retries(),
            outlier_detection: settings
                .outlier_detection
                .as_ref()
                .map(OutlierSetting::detection),
            wait_for_instance: settings.waiting().map(|mut waiting| {
                waiting.on_wait = settings.activate.clone().map(crate::activate::hook);
                waiting
            }),
            ..base
        }
    }
}

/// The methods `[services."<service>".methods]` names, with their settings.
fn named_methods(service: &str, settings: &ServiceSettings) -> Vec<NamedMethod> {
    settings
        .methods
        .keys()
        .map(|m| NamedMethod {
            name: m.clone(),
            setting: format!("services.\"{service}\".methods.{m}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;

    use router_runtime::router::NamedMethod;

    use crate::config::Config;
    use crate::config::testing::{env, error, parse};

    #[test]
    fn named_methods_reach_the_service_router_config() {
        let config = parse(
            "[defaults.methods.Export]\nmax_deadline = \"1m\"\n\
             [services.\"a.B\".methods.Get]\nmax_deadline = \"1s\"\n",
        )
        .expect("valid");
        let (_, router) = &config.service_router_configs()[0];
        assert_eq!(
            router.named_methods,
            [NamedMethod {
                name: "Get".to_owned(),
                setting: "services.\"a.B\".methods.Get".to_owned(),
            }],
            "the service's own, not the defaults' (which apply where they fit)"
        );
        assert!(config.default_router_config().named_methods.is_empty());
        let known = BTreeMap::from([("a.B".to_owned(), vec!["get".to_owned()])]);
        let warnings = config.method_warnings(&known);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("did you mean `get`?"), "{warnings:?}");
    }

    #[test]
    fn every_service_shares_the_jwt_verifier_of_the_load_and_its_key_comes_from_its_environment() {
        // Not a variable of the process: the key is read from the variables
        // the configuration is parsed with.
        let text = "[auth.jwt]\nissuer = \"i\"\naudience = \"a\"\n\
                    hmac_secret_env = \"JWT_SECRET_OF_A_CONFIG_TEST\"\n\
                    [services.\"a.B\"]\n[services.\"c.D\"]\n";
        let e = error(text);
        assert!(e.contains("`auth.jwt.hmac_secret_env`"), "{e}");
        let config = Config::parse(
            Path::new("router.toml"),
            text,
            env(&[("JWT_SECRET_OF_A_CONFIG_TEST", "s3cret")]),
        )
        .expect("valid");
        let verifier = config
            .jwt_verifier
            .get()
            .expect("built when loaded")
            .clone();
        let services = config.service_router_configs();
        let defaults = config.default_router_config();
        assert_eq!(services.len(), 2);
        assert!(services.iter().all(|(_, r)| r.client_auth.is_some()));
        assert!(defaults.client_auth.is_some());
        assert_eq!(
            Arc::strong_count(&verifier),
            2 + 3,
            "the configuration's, this test's and one per service's call check"
        );
        let again = config.clone();
        drop(services);
        assert_eq!(
            Arc::strong_count(&verifier),
            2 + 1 + 1,
            "a clone of the configuration shares it too"
        );
        drop(again);
    }
}
