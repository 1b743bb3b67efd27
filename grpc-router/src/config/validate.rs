//! What one field cannot check: settings that depend on each other, on
//! other sections or on files.

use std::path::PathBuf;
use std::sync::Arc;

use super::sections::MAX_WORKER_THREADS;
use super::service::ServiceSettings;
use super::{Config, LoadedVerifier};

/// A setting that cannot be used: where it is and what is wrong (the
/// caller adds the file and line, or the variable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Invalid {
    /// The setting's path, for example `defaults.heartbeat_timeout`.
    pub(super) key: String,
    /// What is wrong.
    pub(super) message: String,
}

impl Invalid {
    /// The setting at `key` is wrong: `message`.
    pub(super) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Checks what one field cannot: (field path, message) of the first
    /// problem. Each group of settings is checked where it is declared;
    /// what spans sections is checked here.
    ///
    /// Builds the JWT verifier (reading a key named by a variable through
    /// `env`) on the way, and returns it.
    pub(super) fn check(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<LoadedVerifier, Invalid> {
        for (name, settings) in std::iter::once(("defaults".to_owned(), &self.defaults)).chain(
            self.services
                .iter()
                .map(|(name, s)| (format!("services.\"{name}\""), s)),
        ) {
            self.check_service(&name, settings)?;
        }
        self.check_service_names()?;
        self.check_addresses()?;
        self.check_admin_tokens()?;
        let verifier = match &self.auth.jwt {
            Some(jwt) => crate::jwt::Verifier::new(jwt, env)
                .map(|verifier| LoadedVerifier(Some(Arc::new(verifier))))
                .map_err(|(setting, why)| Invalid::new(setting, why))?,
            None => LoadedVerifier::default(),
        };
        self.check_tls()?;
        self.check_cors()?;
        self.tracing
            .check()
            .map_err(|(key, message)| Invalid::new(format!("tracing.{key}"), message))?;
        self.check_runtime_and_limits()?;
        let registrations = self.registrations.address.unwrap_or(self.clients.address);
        self.cluster
            .check(registrations)
            .map_err(|(key, message)| Invalid::new(format!("cluster.{key}"), message))?;
        Ok(verifier)
    }

    /// Checks the settings of a service, or of `[defaults]`, at `name`
    /// (`defaults` or `services."<name>"`), alone and in effect (over the
    /// defaults).
    fn check_service(&self, name: &str, settings: &ServiceSettings) -> Result<(), Invalid> {
        let effective = settings.over(&self.defaults);
        effective.check_heartbeats(name)?;
        settings.check_message_sizes(name)?;
        effective.check_deadlines(name)?;
        settings.check_split(name)?;
        settings.check_rate_limits(name)?;
        settings.check_retries(name)?;
        self.check_credentials(name, settings)?;
        settings.check_client_and_method_limits(name)?;
        settings.check_concurrency(name)?;
        effective.check_waiting(name)?;
        settings.check_names(name)
    }

    /// Checks that each key of `services` is a service's full name.
    fn check_service_names(&self) -> Result<(), Invalid> {
        for name in self.services.keys() {
            if name.is_empty() || name.starts_with('.') || name.contains('/') {
                return Err(Invalid::new(
                    format!("services.\"{name}\""),
                    "is not a fully qualified service name (package.Service)".to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// Checks that the registrations' and the admin listener do not take
    /// another listener's address.
    fn check_addresses(&self) -> Result<(), Invalid> {
        if self.registrations.address == Some(self.clients.address)
            && self.clients.address.port() != 0
        {
            return Err(Invalid::new(
                "registrations.address".to_owned(),
                "is the clients' address; leave it out to register on the clients' listener"
                    .to_owned(),
            ));
        }
        if let Some(admin) = self.admin.address
            && admin.port() != 0
        {
            for (other, address) in [
                ("clients", Some(self.clients.address)),
                ("registrations", self.registrations.address),
            ] {
                if address == Some(admin) {
                    return Err(Invalid::new(
                        "admin.address".to_owned(),
                        format!("is the {other}' address; the admin listener needs its own port"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that admin tokens guard a listener that serves the admin
    /// service.
    fn check_admin_tokens(&self) -> Result<(), Invalid> {
        if !self.admin.tokens_sha256.is_empty()
            && self.admin.address.is_none()
            && !self.clients.serve_admin
        {
            return Err(Invalid::new(
                "admin.tokens_sha256".to_owned(),
                "guards nothing: no listener serves the admin service; set `admin.address` \
                 (or `clients.serve_admin = true`)"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// Checks that the listeners' TLS files can be read, and that
    /// registrations TLS has a listener of its own.
    /// `[clients.cors]`: at least one origin, each one an origin.
    fn check_cors(&self) -> Result<(), Invalid> {
        let Some(cors) = &self.clients.cors else {
            return Ok(());
        };
        if cors.allowed_origins.is_empty() {
            return Err(Invalid::new(
                "clients.cors.allowed_origins",
                "needs at least one origin (`https://app.example.com`), or `\"*\"` for any; \
                 remove [clients.cors] to send no CORS headers",
            ));
        }
        cors.cors()
            .map(|_| ())
            .map_err(|e| Invalid::new("clients.cors.allowed_origins", e.to_string()))
    }

    fn check_tls(&self) -> Result<(), Invalid> {
        for (name, tls) in [
            ("clients.tls", &self.clients.tls),
            ("registrations.tls", &self.registrations.tls),
        ] {
            let Some(tls) = tls else { continue };
            for (key, file) in [
                ("cert", Some(&tls.cert)),
                ("key", Some(&tls.key)),
                ("client_ca", tls.client_ca.as_ref()),
            ] {
                if let Some(file) = file
                    && let Err(e) = std::fs::metadata(file)
                {
                    return Err(Invalid::new(
                        format!("{name}.{key}"),
                        format!("cannot read {}: {e}", file.display()),
                    ));
                }
            }
        }
        if self.registrations.tls.is_some() && self.registrations.address.is_none() {
            return Err(Invalid::new(
                "registrations.tls".to_owned(),
                "needs registrations.address (without it instances use the clients' listener and its TLS)"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// Checks `[runtime]` and `[limits]`.
    fn check_runtime_and_limits(&self) -> Result<(), Invalid> {
        if let Some(threads) = self.runtime.worker_threads
            && !(1..=MAX_WORKER_THREADS).contains(&threads)
        {
            return Err(Invalid::new(
                "runtime.worker_threads".to_owned(),
                format!("{threads} is not between 1 and {MAX_WORKER_THREADS}"),
            ));
        }
        if self.limits.max_services == 0 {
            return Err(Invalid::new(
                "limits.max_services".to_owned(),
                "must be more than 0".to_owned(),
            ));
        }
        Ok(())
    }

    /// The `client_ca` of the listener instances register on, and that
    /// listener's TLS section as the configuration names it.
    fn registration_client_ca(&self) -> (Option<&PathBuf>, &'static str) {
        if self.registrations.address.is_some() {
            let ca = self
                .registrations
                .tls
                .as_ref()
                .and_then(|t| t.client_ca.as_ref());
            (ca, "[registrations.tls] client_ca")
        } else {
            let ca = self.clients.tls.as_ref().and_then(|t| t.client_ca.as_ref());
            (
                ca,
                "[clients.tls] client_ca (instances register on the clients' listener)",
            )
        }
    }

    /// The `client_ca` of the clients' listener.
    pub(super) fn clients_client_ca(&self) -> Option<&PathBuf> {
        self.clients.tls.as_ref().and_then(|t| t.client_ca.as_ref())
    }

    /// Checks a service's registration SANs and allow rules against what
    /// can verify them: a certificate SAN needs a client CA on its
    /// listener, a token's identity or claims need `[auth.jwt]`.
    fn check_credentials(&self, name: &str, settings: &ServiceSettings) -> Result<(), Invalid> {
        let (registration_ca, registration_listener) = self.registration_client_ca();
        if registration_ca.is_none() {
            if !self.registrations.instance_sans.is_empty() && name == "defaults" {
                return Err(Invalid::new(
                    "registrations.instance_sans".to_owned(),
                    format!(
                        "needs {registration_listener}: instances prove their SANs with a \
                         client certificate that CA verified"
                    ),
                ));
            }
            if settings
                .instance_sans
                .as_ref()
                .is_some_and(|s| !s.is_empty())
            {
                return Err(Invalid::new(
                    format!("{name}.instance_sans"),
                    format!(
                        "needs {registration_listener}: instances prove their SANs with a \
                         client certificate that CA verified"
                    ),
                ));
            }
        }
        let jwt = self.auth.jwt.is_some();
        let client_ca = self.clients_client_ca().is_some();
        if !settings.allow.is_empty() && !jwt && !client_ca {
            return Err(Invalid::new(
                format!("{name}.allow"),
                "needs [auth.jwt]: rules decide on a verified token's claims \
                 (or, for `sans` rules, a client certificate: [clients.tls] client_ca)"
                    .to_owned(),
            ));
        }
        for (i, rule) in settings.allow.iter().enumerate() {
            if !jwt {
                for (key, used) in [
                    ("identities", !rule.identities.is_empty()),
                    ("claims", !rule.claims.is_empty()),
                ] {
                    if used {
                        return Err(Invalid::new(
                            format!("{name}.allow[{i}].{key}"),
                            "needs [auth.jwt]: it matches a verified token \
                             (match a client certificate with `sans`)"
                                .to_owned(),
                        ));
                    }
                }
            }
            if !rule.sans.is_empty() && !client_ca {
                return Err(Invalid::new(
                    format!("{name}.allow[{i}].sans"),
                    "needs [clients.tls] client_ca: clients prove their SANs with a client \
                     certificate that CA verified"
                        .to_owned(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::TokenHash;
    use crate::config::testing::{error, parse, tls_sections};

    #[test]
    fn a_timeout_not_above_the_interval_is_refused() {
        let e = error("[defaults]\nheartbeat_interval = \"10s\"\nheartbeat_timeout = \"5s\"\n");
        assert!(
            e.starts_with("router.toml:3:1: `defaults.heartbeat_timeout`"),
            "{e}"
        );
    }

    #[test]
    fn admin_tokens_parse_and_need_a_listener_that_serves_the_admin_service() {
        let hash = crate::config::TokenHash::of("t").hex();
        let config = parse(&format!(
            "[admin]\naddress = \"127.0.0.1:9090\"\ntokens_sha256 = [\"{hash}\"]\n"
        ))
        .expect("valid");
        assert_eq!(config.admin.tokens_sha256, [TokenHash::of("t")]);
        let e = error(&format!("[admin]\ntokens_sha256 = [\"{hash}\"]\n"));
        assert!(
            e.contains("`admin.tokens_sha256`") && e.contains("guards nothing"),
            "{e}"
        );
        let on_clients = parse(&format!(
            "[clients]\nserve_admin = true\n[admin]\ntokens_sha256 = [\"{hash}\"]\n"
        ))
        .expect("valid");
        assert!(on_clients.clients.serve_admin);
        assert!(!parse("").expect("valid").clients.serve_admin);
    }

    #[test]
    fn an_admin_listener_on_a_routed_port_is_refused() {
        let e = error(
            "[clients]\naddress = \"127.0.0.1:7000\"\n[admin]\naddress = \"127.0.0.1:7000\"\n",
        );
        assert!(e.contains("`admin.address`"), "{e}");
        assert!(e.contains("the clients' address"), "{e}");
        let config = parse("[admin]\naddress = \"127.0.0.1:9090\"\n").expect("valid");
        assert_eq!(config.admin.address.map(|a| a.port()), Some(9090));
        assert_eq!(parse("").expect("valid").admin.address, None);
    }

    #[test]
    fn a_default_deadline_over_the_maximum_or_a_bad_method_name_is_refused() {
        let e = error(
            "[services.\"a.B\"]\nmax_deadline = \"1s\"\n\
             [services.\"a.B\".methods.Get]\ndefault_deadline = \"2s\"\n",
        );
        assert!(
            e.contains("`services.\"a.B\".methods.Get.default_deadline`"),
            "{e}"
        );
        assert!(e.contains("more than max_deadline (1s)"), "{e}");
        let e = error("[services.\"a.B\".methods.\"a.B/Get\"]\nmax_deadline = \"1s\"\n");
        assert!(e.contains("is not a method name"), "{e}");
        let e = error("[defaults]\nmax_deadline = \"0s\"\n");
        assert!(
            e.contains("`defaults.max_deadline`: must be more than 0"),
            "{e}"
        );
    }

    #[test]
    fn instance_sans_need_a_client_ca_on_the_registration_listener() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sans = "[services.\"a.B\"]\ninstance_sans = [\"spiffe://corp/*\"]\n";
        let e = error(sans);
        assert!(
            e.contains(
                "`services.\"a.B\".instance_sans`: needs [clients.tls] client_ca \
                 (instances register on the clients' listener)"
            ),
            "{e}"
        );
        // A client CA on the clients' listener does not cover a separate
        // registrations listener.
        let e = error(&format!(
            "{}{sans}",
            tls_sections(dir.path(), true, Some(false))
        ));
        assert!(
            e.contains("`services.\"a.B\".instance_sans`: needs [registrations.tls] client_ca"),
            "{e}"
        );
        let e = error("[registrations]\ninstance_sans = [\"dns:greeter.internal\"]\n");
        assert!(e.contains("`registrations.instance_sans`: needs"), "{e}");
        let config = parse(&format!(
            "{}{sans}",
            tls_sections(dir.path(), false, Some(true))
        ))
        .expect("valid");
        let (_, router) = &config.service_router_configs()[0];
        assert!(router.authorize.is_some(), "registrations are checked");
        assert!(router.client_auth.is_none(), "clients are not");
    }

    #[test]
    fn a_malformed_san_pattern_is_an_error_at_its_key() {
        let e = error("[services.\"a.B\"]\ninstance_sans = [\"greeter.internal\"]\n");
        assert!(e.contains("instance_sans"), "{e}");
        assert!(e.contains("is not a SAN pattern"), "{e}");
        let e = error("[[defaults.allow]]\nsans = [\"dns:*.*.corp\"]\n");
        assert!(e.contains("sans"), "{e}");
        assert!(e.contains("more than one `*`"), "{e}");
    }

    #[test]
    fn san_rules_need_a_client_ca_and_token_rules_a_jwt_section() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jwt = "[auth.jwt]\nissuer = \"i\"\naudience = \"a\"\nhmac_secret_env = \"HOME\"\n";
        let e = error(&format!(
            "{jwt}[[services.\"a.B\".allow]]\nmethods = [\"Get\"]\n\
             [[services.\"a.B\".allow]]\nsans = [\"spiffe://corp/web\"]\n"
        ));
        assert!(
            e.contains("`services.\"a.B\".allow[1].sans`: needs [clients.tls] client_ca"),
            "{e}"
        );
        let mtls = tls_sections(dir.path(), true, None);
        let e = error(&format!(
            "{mtls}[[services.\"a.B\".allow]]\nclaims = {{ role = \"x\" }}\n"
        ));
        assert!(
            e.contains("`services.\"a.B\".allow[0].claims`: needs [auth.jwt]"),
            "{e}"
        );
        let config = parse(&format!(
            "{mtls}[[services.\"a.B\".allow]]\nsans = [\"spiffe://corp/web\"]\n"
        ))
        .expect("valid without JWTs");
        let (_, router) = &config.service_router_configs()[0];
        assert!(router.client_auth.is_some(), "clients are checked");
        assert!(router.authorize.is_none(), "registrations are not");
    }

    #[test]
    fn allow_rules_need_a_jwt_section_and_the_jwt_key_must_load() {
        let e = error("[[services.\"a.B\".allow]]\nmethods = [\"Get\"]\n");
        assert!(
            e.contains("`services.\"a.B\".allow`: needs [auth.jwt]"),
            "{e}"
        );
        let e = error(
            "[auth.jwt]\nissuer = \"i\"\naudience = \"a\"\n\
             public_key_file = \"/nonexistent/key.pem\"\n",
        );
        assert!(e.contains("`auth.jwt.public_key_file`"), "{e}");
        assert!(e.contains("/nonexistent/key.pem"), "{e}");
    }

    #[test]
    fn runtime_worker_threads_are_read_and_checked() {
        let config = parse("[runtime]\nworker_threads = 1\n").expect("valid");
        assert_eq!(config.runtime.worker_threads, Some(1));
        assert!(config.effective_toml().contains("worker_threads = 1"));
        let e = error("[runtime]\nworker_threads = 0\n");
        assert!(
            e.contains("`runtime.worker_threads`") && e.contains("between 1 and"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_tls_file_is_named() {
        let e = error(
            "[clients.tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
        );
        assert!(e.contains("`clients.tls.cert`"), "{e}");
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
    }

    #[test]
    fn an_otlp_endpoint_that_is_not_a_grpc_url_is_named_with_its_line() {
        for (endpoint, why) in [
            ("127.0.0.1:4317", "scheme"),
            ("udp://collector:4317", "scheme"),
            ("http://collector:4318/v1/traces", "no path"),
            ("http://", "not a URL"),
        ] {
            let e = error(&format!(
                "[log]\nlevel = \"info\"\n[tracing]\notlp_endpoint = \"{endpoint}\"\n"
            ));
            assert!(
                e.starts_with("router.toml:4:1: `tracing.otlp_endpoint`"),
                "{endpoint}: {e}"
            );
            assert!(e.contains(why), "{endpoint}: {e}");
            assert!(e.contains("http://127.0.0.1:4317"), "the fix is shown: {e}");
        }
    }

    #[cfg(not(feature = "otel"))]
    #[test]
    fn an_otlp_endpoint_without_the_otel_feature_is_refused() {
        let e = error("[tracing]\notlp_endpoint = \"http://127.0.0.1:4317\"\n");
        assert!(
            e.starts_with("router.toml:2:1: `tracing.otlp_endpoint`"),
            "{e}"
        );
        assert!(e.contains("without the `otel` feature"), "{e}");
    }

    #[test]
    fn a_sample_ratio_outside_zero_to_one_is_refused() {
        for ratio in ["1.5", "-0.1", "nan"] {
            let e = error(&format!("[tracing]\nsample_ratio = {ratio}\n"));
            assert!(
                e.starts_with("router.toml:2:1: `tracing.sample_ratio`"),
                "{ratio}: {e}"
            );
            assert!(e.contains("not between 0 and 1"), "{ratio}: {e}");
        }
        let e = error("[tracing]\nsample_ratio = \"half\"\n");
        assert!(e.contains("`tracing.sample_ratio`"), "{e}");
        let e = error("[tracing]\nservice_name = \" \"\n");
        assert!(
            e.contains("`tracing.service_name`: must not be empty"),
            "{e}"
        );
        let e = error("[tracing]\nsample_rate = 0.5\n");
        assert!(e.contains("unknown field `sample_rate`"), "{e}");
    }
}
