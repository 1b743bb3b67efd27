//! Flow control of the register stream, the same on both sides (as h2 keeps
//! it): the router sends requests and receives responses, the bridge the
//! reverse, and each direction of each call uses these pieces.
//!
//! - [`credit`]: credit arithmetic: the sender's [`SendCredit`], the
//!   receiver's [`CreditReturn`].
//! - [`chunk`]: sending a message within credit and frame limits
//!   ([`send_with_credit`]), reassembling chunks ([`Assembler`]) under a
//!   limit per message and, shared by several calls, a [`PartialPool`].
//! - [`window`]: the receiver's enforcement: bytes delivered and not yet
//!   consumed, against the window granted plus one frame ([`RecvWindow`]),
//!   and the consuming side's bookkeeping ([`Intake`]).

pub(crate) mod chunk;
pub(crate) mod credit;
pub(crate) mod window;

pub(crate) use chunk::{Oversize, PartialPool, SendError, send_with_credit};
pub(crate) use credit::SendCredit;
pub(crate) use window::{Intake, RecvWindow};
