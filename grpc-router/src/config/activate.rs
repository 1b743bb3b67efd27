//! `[services."<name>".activate]` (and `[defaults.activate]`): what starts
//! an instance when a call starts waiting for a service with none, and
//! `[keda]`, the KEDA external scaler's listener.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::Invalid;
use super::values::duration;

/// The activation hook of a service: a command or an HTTP POST, run when a
/// call starts waiting for the service and no instance is registered, at
/// most once per `cooldown`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateSetting {
    /// A command and its arguments (no shell), run with the service's name
    /// in `GRPC_ROUTER_SERVICE`; e.g. `["systemctl", "start", "greeter"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// An `http://` URL POSTed `{"service": "<name>"}`, in place of
    /// `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The shortest time between two activations of one service (default
    /// 30s): calls that start waiting meanwhile run nothing.
    #[serde(default = "default_cooldown", with = "duration")]
    pub cooldown: Duration,
}

fn default_cooldown() -> Duration {
    Duration::from_secs(30)
}

impl ActivateSetting {
    /// Checks the hook at `name` (`services."x".activate`): exactly one of
    /// `command` and `url`, the URL an `http://` one.
    pub(super) fn check(&self, name: &str) -> Result<(), Invalid> {
        match (&self.command.is_empty(), &self.url) {
            (true, None) => Err(Invalid::new(
                name.to_owned(),
                "needs `command` (an argv array) or `url`".to_owned(),
            )),
            (false, Some(_)) => Err(Invalid::new(
                format!("{name}.url"),
                "set either `command` or `url`, not both".to_owned(),
            )),
            (false, None) if self.command[0].is_empty() => Err(Invalid::new(
                format!("{name}.command"),
                "its first element (the program) is empty".to_owned(),
            )),
            (_, Some(url)) if crate::activate::HttpTarget::parse(url).is_none() => {
                Err(Invalid::new(
                    format!("{name}.url"),
                    format!(
                        "`{url}` is not an `http://host:port/path` URL (https is not supported)"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// `[keda]`: the KEDA external scaler (`externalscaler.ExternalScaler`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Keda {
    /// Where the scaler listens (plain gRPC); none: not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{error, parse};

    #[test]
    fn an_activation_needs_exactly_one_of_command_and_url() {
        let e = error("[services.\"a.B\".activate]\ncooldown = \"1m\"\n");
        assert!(e.contains("services.\"a.B\".activate"), "{e}");
        let e = error("[defaults.activate]\ncommand = [\"x\"]\nurl = \"http://127.0.0.1:1/\"\n");
        assert!(e.contains("defaults.activate.url"), "{e}");
        let e = error("[defaults.activate]\nurl = \"https://example.com/\"\n");
        assert!(e.contains("https is not supported"), "{e}");
        let config = parse(
            "[defaults]\nwait_for_instance = \"20s\"\n[services.\"a.B\".activate]\ncommand = [\"start\", \"b\"]\n",
        )
        .expect("valid");
        let b = &config.services["a.B"].over(&config.defaults);
        assert_eq!(b.waiting().expect("waits").wait.as_secs(), 20);
        assert_eq!(b.activate.as_ref().expect("hook").cooldown.as_secs(), 30);
    }

    #[test]
    fn waiting_is_set_by_an_environment_variable_too() {
        let config = crate::config::Config::parse(
            std::path::Path::new("r.toml"),
            "",
            crate::config::testing::env(&[
                ("GRPC_ROUTER_DEFAULTS__WAIT_FOR_INSTANCE", "5s"),
                ("GRPC_ROUTER_KEDA__LISTEN", "127.0.0.1:9091"),
            ]),
        )
        .expect("valid");
        let waiting = config.default_router_config().wait_for_instance;
        assert_eq!(waiting.expect("waits").wait.as_secs(), 5);
        assert_eq!(
            config.keda.listen,
            Some("127.0.0.1:9091".parse().expect("address"))
        );
    }

    #[test]
    fn waiting_settings_must_be_more_than_zero() {
        let e = error("[defaults]\nwait_for_instance = \"0s\"\n");
        assert!(e.contains("defaults.wait_for_instance"), "{e}");
        let e = error("[services.\"a.B\"]\nmax_waiting_calls = 0\n");
        assert!(e.contains("max_waiting_calls"), "{e}");
    }
}
