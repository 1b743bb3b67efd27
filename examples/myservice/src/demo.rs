//! Helpers the example binaries share.
