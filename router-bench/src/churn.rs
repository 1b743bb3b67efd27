//! The instance fleet of the soak: instance processes joining, draining
//! (SIGTERM) and being killed (SIGKILL) on a schedule, never fewer than
//! `instances` registered.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::BoxError;
use crate::apps::start_instance;
use crate::process::Proc;

/// How long a draining instance may take before it is killed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(40);

/// When each instance was killed or drained, for attributing failures.
#[derive(Debug, Default)]
pub struct ChurnLog {
    inner: Mutex<ChurnCounts>,
}

/// What the fleet did.
#[derive(Debug, Default, Clone)]
pub struct ChurnCounts {
    /// Instances started (including the first ones).
    pub joined: u64,
    /// Instances sent SIGTERM that exited by themselves.
    pub drained: u64,
    /// Instances sent SIGTERM that had to be killed after the drain timeout.
    pub drain_timeouts: u64,
    /// Instances killed with SIGKILL.
    pub killed: u64,
    /// Instances that failed to start or register.
    pub start_failures: u64,
    /// When each SIGKILL was sent.
    pub kills: Vec<Instant>,
    /// When each SIGTERM was sent and when the instance exited.
    pub drains: Vec<(Instant, Instant)>,
    /// The fewest instances registered at any moment (after the start).
    pub min_live: usize,
}

impl ChurnLog {
    fn update(&self, f: impl FnOnce(&mut ChurnCounts)) {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// A copy of the counts so far.
    pub fn snapshot(&self) -> ChurnCounts {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The running fleet.
pub struct Fleet {
    exe: PathBuf,
    router: SocketAddr,
    live: VecDeque<Proc>,
    next_id: u64,
    /// What happened, shared with the load for attribution.
    pub log: Arc<ChurnLog>,
}

impl Fleet {
    /// Starts `instances` instance processes registered with `router`.
    pub async fn start(
        exe: PathBuf,
        router: SocketAddr,
        instances: usize,
    ) -> Result<Fleet, BoxError> {
        let mut fleet = Fleet {
            exe,
            router,
            live: VecDeque::new(),
            next_id: 0,
            log: Arc::new(ChurnLog::default()),
        };
        for _ in 0..instances.max(1) {
            fleet.join().await?;
        }
        let live = fleet.live.len();
        fleet.log.update(|c| c.min_live = live);
        Ok(fleet)
    }

    async fn join(&mut self) -> Result<(), BoxError> {
        let id = format!("soak-{}", self.next_id);
        self.next_id += 1;
        match start_instance(&self.exe, self.router, &id, &[]).await {
            Ok(instance) => {
                self.live.push_back(instance);
                self.log.update(|c| c.joined += 1);
                Ok(())
            }
            Err(e) => {
                self.log.update(|c| c.start_failures += 1);
                Err(e)
            }
        }
    }

    /// One step of the schedule: a new instance joins, then the oldest
    /// leaves, by draining on even steps and by SIGKILL on odd ones. The
    /// fleet never drops below the size it started with.
    pub async fn step(&mut self, step: u64) -> Result<(), BoxError> {
        if let Err(e) = self.join().await {
            eprintln!("soak: an instance failed to join: {e}");
            return Ok(());
        }
        let Some(oldest) = self.live.pop_front() else {
            return Ok(());
        };
        let live = self.live.len();
        self.log.update(|c| c.min_live = c.min_live.min(live));
        if step.is_multiple_of(2) {
            let sent = Instant::now();
            let clean = oldest.drain(DRAIN_TIMEOUT).await?;
            let exited = Instant::now();
            self.log.update(|c| {
                c.drains.push((sent, exited));
                if clean {
                    c.drained += 1;
                } else {
                    c.drain_timeouts += 1;
                }
            });
        } else {
            self.log.update(|c| c.kills.push(Instant::now()));
            oldest.kill().await?;
            self.log.update(|c| c.killed += 1);
        }
        Ok(())
    }

    /// Kills every instance left.
    pub async fn stop(mut self) {
        while let Some(instance) = self.live.pop_front() {
            let _ = instance.kill().await;
        }
    }
}
