//! The runtime's end-to-end tests live in `tests/`: each starts a real
//! router on 127.0.0.1:0, real bridges and real tonic clients, with the
//! example's Greeter and Inventory services as fixtures and the harness of
//! the `test-kit` crate. This library is empty; `cargo test -p e2e` runs them.
