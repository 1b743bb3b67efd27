//! What the router knows of the instances: the service's methods, the registry
//! of registrations, load balancing and routing keys.

pub(super) mod balance;
pub(super) mod registry;
pub(super) mod route_key;
pub(super) mod service;
pub(super) mod waiting;
