//! The protocol's default sizes, shared by the router's [`RouterConfig`] and
//! the bridge's [`BridgeConfig`] so both sides start from the same numbers.
//!
//! [`RouterConfig`]: crate::router::RouterConfig
//! [`BridgeConfig`]: crate::bridge::BridgeConfig

/// Credit, in bytes, each side grants per call and direction.
pub const WINDOW: u32 = 256 * 1024;

/// The largest frame payload each side accepts; larger messages travel in
/// chunks.
pub const MAX_FRAME: u32 = 128 * 1024;

/// The largest request message (tonic's default decoding limit).
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// The largest response message the router reassembles: far above common
/// client receive limits, so a client's own limit applies as in a direct
/// call, while a bridge cannot make the router hold an unbounded message.
pub const MAX_RESPONSE_MESSAGE: usize = 64 * 1024 * 1024;

/// The bytes of partly received response messages the router holds for one
/// registration, across all its calls: as much as one message of the
/// largest size, so the bound never refuses a response the per-message
/// limit allows alone.
pub const MAX_PARTIAL_RESPONSE: usize = MAX_RESPONSE_MESSAGE;

/// The smallest frame limit either side honours, whatever the peer declares.
pub const MIN_FRAME: u32 = 1024;

/// Envelope bytes a register-stream message may carry beyond its frame's
/// payload (ids, tags, metadata of a `Start`).
pub const FRAME_OVERHEAD: usize = 64 * 1024;

/// Room for a call's headers and trailers beyond its message window.
pub const METADATA_ALLOWANCE: usize = 64 * 1024;

/// The request window a router assumes for a bridge whose `Hello` declares
/// none (`initial_window = 0`).
pub const UNDECLARED_WINDOW: u32 = 64 * 1024;
