//! A call's response side: the bridge's frames turned into the client's
//! response stream, and the guard that cleans the call up however it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::Stream;
use tokio::task::AbortHandle;
use tokio::time::Sleep;
use tonic::{Code, Status};

use crate::flow::{Intake, Oversize};
use crate::metrics::CallRecord;
use crate::pb;
use crate::queue::QueueReceiver;
use crate::router::RouterCore;
use crate::router::recent_errors::Outcome;
use crate::router::registry::{CallEvent, Instance};
use crate::router::service::Method;
use crate::wire::RouterFrame;
use crate::{metadata, oversize};

/// The status of a call whose deadline passed in the router.
pub(crate) fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("deadline exceeded while the router forwarded the call")
}

/// Cleans up a call whatever way it ends: forgets it on the registration and,
/// when the client went away first, tells the bridge to cancel it.
pub(crate) struct CallGuard {
    pub(crate) core: Arc<RouterCore>,
    pub(crate) instance: Arc<Instance>,
    pub(crate) call_id: u64,
    /// Whether the bridge knows the call is over (no `Cancel` needed).
    pub(crate) finished: bool,
    /// The request pump, stopped with the call.
    pub(crate) pump: Option<AbortHandle>,
    /// The method called, for the service's recent errors.
    pub(crate) method: Arc<Method>,
    /// When the call started on the instance.
    pub(crate) started: std::time::Instant,
    /// Whether the attempt's end was reported (see [`CallGuard::end`]); a
    /// guard dropped before is a call the client abandoned.
    pub(crate) ended: bool,
}

impl CallGuard {
    /// Tells the bridge the call is over (once), dropping its frames still
    /// queued for the bridge.
    fn cancel(&mut self, code: Code, reason: &str) {
        if !self.finished {
            self.finished = true;
            self.instance.cancel_call(self.call_id, code, reason);
        }
    }

    /// Reports how the attempt ended to the observers (once: a later end,
    /// or the drop of an ended guard, is not reported).
    pub(crate) fn end(&mut self, outcome: Outcome, judges_instance: bool) {
        if self.ended {
            return;
        }
        self.ended = true;
        crate::router::attempt_end::ended(&crate::router::attempt_end::AttemptEnd {
            core: &self.core,
            instance: &self.instance,
            method: &self.method,
            call_id: self.call_id,
            outcome: &outcome,
            elapsed: self.started.elapsed(),
            judges_instance,
        });
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.cancel(Code::Cancelled, "client cancelled");
        if let Some(pump) = &self.pump {
            pump.abort();
        }
        self.instance.close_call(self.call_id);
        self.end(Outcome::cancelled(), false);
        self.core.stats.call_ended();
    }
}

pub(crate) enum First {
    /// The response headers: the call is answered.
    Headers(pb::Metadata),
    /// The instance went away before answering.
    Lost(Status),
    /// The instance refused the call without running it (at capacity).
    Refused(Status),
    /// The call ended before any response (trailers-only, deadline, ...).
    Failed(Status),
}

/// The response messages of one call, handed to tonic for the client.
pub(crate) struct ReplyStream {
    pub(crate) events: QueueReceiver<CallEvent>,
    /// Takes response frames: releases their bytes, returns credit,
    /// reassembles chunks.
    pub(crate) intake: Intake,
    pub(crate) method: Arc<Method>,
    /// Response messages passed to the client so far.
    pub(crate) messages: u32,
    pub(crate) guard: CallGuard,
    pub(crate) deadline: Option<Pin<Box<Sleep>>>,
    pub(crate) done: bool,
    /// The call's span, ended with the call's status (or CANCELLED when
    /// the client goes away first).
    pub(crate) trace: crate::trace::Pending,
    /// The call's metrics, which the final status ends.
    pub(crate) record: CallRecord,
    /// The call's slots under the concurrency limits, given back when the
    /// stream is dropped.
    pub(crate) permit: crate::router::concurrency::Permit,
}

impl ReplyStream {
    /// Waits for the response headers, or the call's early end (which
    /// becomes the attempt's outcome).
    pub(crate) async fn first_event(&mut self) -> First {
        let first = self.wait_first().await;
        match &first {
            First::Headers(_) => {}
            First::Lost(status) | First::Refused(status) => {
                self.guard.end(Outcome::of(status), false);
            }
            First::Failed(status) => self.guard.end(Outcome::of(status), true),
        }
        first
    }

    async fn wait_first(&mut self) -> First {
        let event = {
            let deadline = self.deadline.as_mut();
            match deadline {
                Some(sleep) => tokio::select! {
                    event = self.events.recv() => event,
                    _ = sleep => {
                        self.guard.cancel(Code::DeadlineExceeded, "deadline exceeded");
                        return First::Failed(deadline_exceeded());
                    }
                },
                None => self.events.recv().await,
            }
        };
        if let Some(event) = &event {
            self.release(event.size());
        }
        match event {
            Some(CallEvent::Headers(md)) => First::Headers(md),
            Some(CallEvent::Trailers(trailers)) => {
                self.guard.finished = true;
                if trailers.not_started {
                    First::Refused(metadata::status_from_trailers(trailers))
                } else {
                    First::Failed(self.final_status(trailers))
                }
            }
            Some(CallEvent::Lost(status)) => {
                self.guard.finished = true;
                First::Lost(status)
            }
            Some(CallEvent::Violation(status) | CallEvent::Failed(status)) => {
                self.guard.finished = true;
                First::Failed(status)
            }
            Some(CallEvent::Message(_) | CallEvent::Chunk(_)) => {
                self.guard.cancel(Code::Internal, "message before headers");
                First::Failed(Status::internal(
                    "instance sent a message before response headers",
                ))
            }
            None => {
                self.guard.finished = true;
                First::Lost(Status::unavailable("instance went away"))
            }
        }
    }

    /// Forgets `size` buffered bytes of metadata the client's side has taken.
    fn release(&self, size: usize) {
        self.intake.metadata(size);
    }

    /// The call's status from its trailers, or INTERNAL when a method that
    /// answers with one message ended OK without it.
    fn final_status(&self, trailers: pb::Trailers) -> Status {
        let status = metadata::status_from_trailers(trailers);
        if status.code() == Code::Ok && self.messages == 0 && self.method.kind.single_response() {
            return Status::internal(format!(
                "instance `{}` ended `{}` with OK but sent no response message",
                self.guard.instance.id(),
                self.method.path
            ));
        }
        status
    }

    /// Passes one whole response message on, unless the method answers with
    /// one message and this is a second.
    fn deliver(&mut self, message: Bytes) -> Poll<Option<Result<Bytes, Status>>> {
        self.messages += 1;
        if self.messages > 1 && self.method.kind.single_response() {
            self.guard.cancel(
                Code::Internal,
                "a second response message for a unary method",
            );
            return self.fail(Status::internal(format!(
                "instance `{}` sent more than one response message for `{}`",
                self.guard.instance.id(),
                self.method.path
            )));
        }
        self.record.sent(message.len());
        Poll::Ready(Some(Ok(message)))
    }

    /// Sends the bridge credit the client's side has made room for.
    fn return_credit(&self, increment: Option<u32>) {
        if let Some(increment) = increment {
            self.guard
                .instance
                .send(RouterFrame::WindowUpdate(pb::WindowUpdate {
                    call_id: self.guard.call_id,
                    increment,
                }));
        }
    }

    /// Fails the call for a response message over a limit of the router's:
    /// its own (`max_response_message_size`), or the registration's bound on
    /// partly received messages, which only an instance sending messages
    /// that never end (or many large ones at once) reaches, so it is logged
    /// as the instance's fault. The bridge gets `Cancel`.
    fn refuse(
        &mut self,
        over: Oversize,
        size: oversize::Size,
    ) -> Poll<Option<Result<Bytes, Status>>> {
        let instance = self.guard.instance.id().to_owned();
        let status = match over {
            Oversize::Message { limit } => {
                oversize::router_response(size, limit, &instance, self.guard.core.service.name())
            }
            Oversize::Pool { limit } => {
                tracing::warn!(
                    event = "partial_limit",
                    service = self.guard.core.service.name(),
                    instance = %instance,
                    call_id = self.guard.call_id,
                    limit,
                    "instance's partly received response messages reached the router's bound; failing the call"
                );
                oversize::router_partial(limit, &instance)
            }
        };
        self.guard.cancel(Code::ResourceExhausted, status.message());
        self.fail(status)
    }

    fn fail(&mut self, status: Status) -> Poll<Option<Result<Bytes, Status>>> {
        self.done = true;
        self.trace.end(&status);
        self.record.finish(status.code());
        self.guard.end(Outcome::of(&status), true);
        Poll::Ready(Some(Err(status)))
    }
}

impl Stream for ReplyStream {
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            if let Some(sleep) = this.deadline.as_mut()
                && sleep.as_mut().poll(cx).is_ready()
            {
                this.guard
                    .cancel(Code::DeadlineExceeded, "deadline exceeded");
                return this.fail(deadline_exceeded());
            }
            let event = ready!(this.events.poll_recv(cx));
            match event {
                Some(CallEvent::Message(message)) => {
                    let credit = this.intake.message(message.len());
                    this.return_credit(credit);
                    if message.len() > this.intake.max_message() {
                        let size = oversize::Size::Exactly(message.len());
                        return this.refuse(
                            Oversize::Message {
                                limit: this.intake.max_message(),
                            },
                            size,
                        );
                    }
                    return this.deliver(message);
                }
                Some(CallEvent::Chunk(chunk)) => match this.intake.chunk(&chunk.data, chunk.last) {
                    Ok((whole, credit)) => {
                        this.return_credit(credit);
                        if let Some(message) = whole {
                            return this.deliver(message);
                        }
                    }
                    Err(over) => {
                        let size = oversize::Size::MoreThan(this.intake.max_message());
                        return this.refuse(over, size);
                    }
                },
                Some(CallEvent::Headers(md)) => {
                    // The session lets one Headers frame through per call;
                    // only its accounting is left to undo.
                    this.release(CallEvent::Headers(md).size());
                }
                Some(CallEvent::Trailers(trailers)) => {
                    this.guard.finished = true;
                    this.release(trailers_size(&trailers));
                    // tonic writes an `Err` as the trailers; an OK status with
                    // metadata becomes `grpc-status: 0` plus that metadata.
                    let status = this.final_status(trailers);
                    return this.fail(status);
                }
                Some(
                    CallEvent::Lost(status)
                    | CallEvent::Violation(status)
                    | CallEvent::Failed(status),
                ) => {
                    this.guard.finished = true;
                    return this.fail(status);
                }
                None => {
                    this.guard.finished = true;
                    return this.fail(Status::unavailable("instance went away"));
                }
            }
        }
    }
}

/// The bytes a call's trailers were counted as while buffered.
fn trailers_size(trailers: &pb::Trailers) -> usize {
    use prost::Message as _;
    trailers.encoded_len()
}
