//! The benchmarks of grpc-router, behind two binaries:
//!
//! - `router-bench` ([`cli::bench`]) compares: the routed path side by side
//!   with a direct tonic server, in this process ([`inprocess`],
//!   [`registrations`]) or as deployed, every target a process of its own
//!   ([`procs`], whose [`procs::plan`] is the one runner of its scenarios);
//! - `router-soak` ([`cli::soak`]) checks a router child process over time:
//!   [`soak`] (mixed load under instance churn) and [`memory`] (what it keeps
//!   after hostile load).
//!
//! Shared: the closed-loop load ([`load`]) and its interleaved rounds
//! ([`scenarios`]), the client side of a target ([`target`]), child
//! processes ([`process`], [`apps`], [`router_child`]), the in-process
//! servers ([`servers`]), the machine ([`machine`]) and the tables
//! ([`report`]).

pub mod alloc;
pub mod apps;
pub mod churn;
pub mod cli;
pub mod inprocess;
pub mod load;
pub mod machine;
pub mod memory;
pub mod process;
pub mod procs;
pub mod registrations;
pub mod report;
pub mod router_child;
pub mod scenarios;
pub mod servers;
pub mod soak;
pub mod soak_load;
pub mod target;

/// Errors of the benchmark: reported and turned into a failing exit code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
