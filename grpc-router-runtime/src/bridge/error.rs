//! Why a bridge's registration with a router failed or ended, as a type: the
//! bridge logs it, keeps the latest in [`super::BridgeState::last_error`] and
//! decides from it how long to wait before trying again.

use std::time::Duration;

use super::EndpointError;

/// Why a registration failed or ended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// The endpoint can never be dialled (no scheme, https without TLS ...).
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The TLS settings do not apply to the endpoint.
    #[error("invalid TLS settings for `{endpoint}`: {reason}")]
    Tls {
        /// The router endpoint.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// The router could not be reached; `cause` is the error's whole chain.
    #[error("cannot connect to `{endpoint}`: {cause}")]
    Connect {
        /// The router endpoint.
        endpoint: String,
        /// The transport error and its sources.
        cause: String,
    },
    /// The router refused the registration (authorization, protocol version,
    /// service name ...): trying again at once would be refused again.
    #[error("router refused registration ({code:?}): {message}")]
    Refused {
        /// The status code the router answered with.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// Another bridge process holds this instance id now: the router closed
    /// this registration because that process took the id over (this one
    /// missed a ping), or refuses this process while that one lives
    /// (ABORTED). The bridge tries again at its longest backoff and counts
    /// the router in [`BridgeState::replaced`](super::BridgeState::replaced)
    /// meanwhile.
    #[error("router replaced this registration (Aborted): {message}")]
    Replaced {
        /// The router's message.
        message: String,
    },
    /// The address answered UNIMPLEMENTED for the register path: it serves
    /// clients (the daemon's clients' listener), or it is a router compiled
    /// for another service. Trying again there is refused again.
    #[error(
        "`{endpoint}` does not serve `{path}` (UNIMPLEMENTED): this address serves clients, \
         not registrations (or is a router compiled for another service); point the bridge \
         at the router's registrations address (the daemon's `[registrations] address`)"
    )]
    NotRegistrations {
        /// The router endpoint.
        endpoint: String,
        /// The register path the bridge called.
        path: String,
    },
    /// The register call or stream failed with a status.
    #[error("router ended the registration ({code:?}): {message}")]
    Ended {
        /// The status code.
        code: tonic::Code,
        /// Its message: the router's reason.
        message: String,
    },
    /// The router closed the register stream without a status.
    #[error("router closed the register stream")]
    Closed,
    /// The router sent `GoAway` (it is shutting down or moving the bridge).
    #[error("router going away: {0}")]
    GoingAway(String),
    /// Nothing arrived from the router for longer than its heartbeat timeout.
    #[error("router silent for {0:?}")]
    Silent(Duration),
    /// An endpoint to resolve (`BridgeConfig::resolve_every`) has no host and
    /// port to look up.
    #[error("cannot resolve router endpoint `{0}`: expected scheme://host:port")]
    Unresolvable(String),
    /// The registration reached a router replica this bridge holds a
    /// registration with already (through a balancer, or a second address
    /// of the replica): the router refused it (its `Hello.registered_with`
    /// named the replica), and it is tried again once some replica of the
    /// fleet is missing.
    #[error("router `{router_id}` holds a registration of this bridge already; closed this one")]
    Duplicate {
        /// The replica's `router_id`.
        router_id: String,
    },
    /// The router broke the register protocol.
    #[error("router broke the register protocol: {0}")]
    Protocol(&'static str),
}

impl RegistrationError {
    /// The error for a failed register call or stream: a refusal when the
    /// code says the router will refuse again, otherwise an end.
    pub(crate) fn from_status(status: &tonic::Status) -> Self {
        let (code, message) = (status.code(), status.message().to_owned());
        if code == tonic::Code::Aborted {
            RegistrationError::Replaced { message }
        } else if refused(code) {
            RegistrationError::Refused { code, message }
        } else {
            RegistrationError::Ended { code, message }
        }
    }

    /// The error for a register call that failed before the router's
    /// `Welcome`: as [`RegistrationError::from_status`], except that
    /// UNIMPLEMENTED means the address does not take registrations of this
    /// service at all.
    pub(crate) fn from_register_status(status: &tonic::Status, endpoint: &str, path: &str) -> Self {
        if status.code() == tonic::Code::Unimplemented {
            return RegistrationError::NotRegistrations {
                endpoint: endpoint.to_owned(),
                path: path.to_owned(),
            };
        }
        Self::from_status(status)
    }

    /// Whether the bridge should wait its longest backoff before trying
    /// again: the router refused the registration, or another process holds
    /// the id (trying again at once would only be refused again).
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(
            self,
            RegistrationError::Refused { .. }
                | RegistrationError::Replaced { .. }
                | RegistrationError::NotRegistrations { .. }
        )
    }

    /// Whether another bridge process took this registration's instance id
    /// over.
    pub(crate) fn is_replaced(&self) -> bool {
        matches!(self, RegistrationError::Replaced { .. })
    }
}

/// Codes by which a router refuses a registration: retrying at once would
/// only be refused again.
fn refused(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::FailedPrecondition
            | tonic::Code::AlreadyExists
            | tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::InvalidArgument
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_refusals_or_ends_with_their_message() {
        let refused = RegistrationError::from_status(&tonic::Status::permission_denied("no"));
        assert!(refused.is_refusal());
        assert_eq!(
            refused.to_string(),
            "router refused registration (PermissionDenied): no"
        );
        let ended = RegistrationError::from_status(&tonic::Status::unavailable("evicted"));
        assert!(!ended.is_refusal());
        assert_eq!(
            ended.to_string(),
            "router ended the registration (Unavailable): evicted"
        );
        let replaced = RegistrationError::from_status(&tonic::Status::aborted("re-registered"));
        assert!(replaced.is_refusal() && replaced.is_replaced());
        assert_eq!(
            replaced.to_string(),
            "router replaced this registration (Aborted): re-registered"
        );
    }

    #[test]
    fn unimplemented_before_welcome_names_the_clients_address_mistake() {
        let status = tonic::Status::unimplemented("");
        let error = RegistrationError::from_register_status(
            &status,
            "http://127.0.0.1:50051",
            "/pkg.SvcRouter/Register",
        );
        assert!(error.is_refusal());
        let text = error.to_string();
        assert!(
            text.contains("`http://127.0.0.1:50051` does not serve `/pkg.SvcRouter/Register`"),
            "{text}"
        );
        assert!(
            text.contains("this address serves clients, not registrations"),
            "{text}"
        );
        // Other codes keep their meaning.
        let refused = RegistrationError::from_register_status(
            &tonic::Status::permission_denied("no"),
            "http://a:1",
            "/p",
        );
        assert_eq!(
            refused.to_string(),
            "router refused registration (PermissionDenied): no"
        );
    }
}
