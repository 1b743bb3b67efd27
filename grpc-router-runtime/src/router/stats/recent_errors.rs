//! A routed service's recent failed calls: the last [`RECENT_ERRORS`], each
//! with its time, method, instance, code and (truncated) message, for the
//! status page and `grpc-router status`.
//!
//! Memory stays bounded whatever the failure rate: the ring holds at most
//! [`RECENT_ERRORS`] entries, and each message at most
//! [`MAX_ERROR_MESSAGE`] bytes. Only failing calls take its lock, briefly.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tonic::{Code, Status};

/// How many failed calls a service remembers.
pub const RECENT_ERRORS: usize = 20;
/// The longest message kept (bytes); longer ones are cut at a character
/// boundary and end with `…`.
pub const MAX_ERROR_MESSAGE: usize = 256;

/// How a call ended, as its guard records it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// OK.
    Ok,
    /// Any other status.
    Failed(Code, Cow<'static, str>),
}

impl Outcome {
    /// The outcome of a call that ended with `status` (a message is copied
    /// only for a failure).
    pub(crate) fn of(status: &Status) -> Self {
        match status.code() {
            Code::Ok => Outcome::Ok,
            code => Outcome::Failed(code, Cow::Owned(truncate(status.message()))),
        }
    }

    /// The outcome of a call its client abandoned.
    pub(crate) fn cancelled() -> Self {
        Outcome::Failed(Code::Cancelled, Cow::Borrowed("client cancelled"))
    }
}

/// One failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentError {
    /// When it ended.
    pub time: SystemTime,
    /// Its gRPC path (`/pkg.Service/Method`).
    pub method: String,
    /// The instance it ran on; empty when none took it.
    pub instance: String,
    /// Its status code.
    pub code: Code,
    /// Its status message, at most [`MAX_ERROR_MESSAGE`] bytes.
    pub message: String,
}

/// The ring of a service's recent failed calls.
#[derive(Debug, Default)]
pub(crate) struct RecentErrors {
    ring: Mutex<VecDeque<RecentError>>,
    recorded: AtomicU64,
}

impl RecentErrors {
    /// Remembers a failed call, forgetting the oldest past [`RECENT_ERRORS`].
    pub(crate) fn push(&self, method: &str, instance: &str, code: Code, message: &str) {
        let entry = RecentError {
            time: SystemTime::now(),
            method: method.to_owned(),
            instance: truncate(instance),
            code,
            message: truncate(message),
        };
        self.recorded.fetch_add(1, Ordering::Relaxed);
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == RECENT_ERRORS {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// The failed calls remembered, newest first.
    pub(crate) fn list(&self) -> Vec<RecentError> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().rev().cloned().collect()
    }

    /// Failed calls recorded since start (the ring keeps the last ones).
    pub(crate) fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }
}

/// `text`, cut to [`MAX_ERROR_MESSAGE`] bytes at a character boundary.
fn truncate(text: &str) -> String {
    if text.len() <= MAX_ERROR_MESSAGE {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_MESSAGE - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_entries_first_and_counts_them_all() {
        let errors = RecentErrors::default();
        for i in 0..(RECENT_ERRORS + 5) {
            errors.push("/p.S/M", "a", Code::Unavailable, &format!("failure {i}"));
        }
        let list = errors.list();
        assert_eq!(list.len(), RECENT_ERRORS);
        assert_eq!(list[0].message, format!("failure {}", RECENT_ERRORS + 4));
        assert_eq!(list[RECENT_ERRORS - 1].message, "failure 5");
        assert_eq!(errors.recorded(), (RECENT_ERRORS + 5) as u64);
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let errors = RecentErrors::default();
        let long = "é".repeat(MAX_ERROR_MESSAGE);
        errors.push("/p.S/M", "a", Code::Internal, &long);
        let message = &errors.list()[0].message;
        assert!(message.len() <= MAX_ERROR_MESSAGE, "{}", message.len());
        assert!(message.ends_with('…'));
        assert!(message.starts_with("éé"));
    }

    #[test]
    fn only_failures_copy_their_message() {
        assert_eq!(Outcome::of(&Status::ok("fine")), Outcome::Ok);
        assert_eq!(
            Outcome::of(&Status::not_found("gone")),
            Outcome::Failed(Code::NotFound, Cow::Owned("gone".to_owned()))
        );
    }
}
