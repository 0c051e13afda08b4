//! The background driver: one thread that calls [`Engine::tick`],
//! [`Engine::reclaim_expired`] and a rate-limited [`Engine::defrag_step`] on a
//! timer, for callers that do not run their own.
//!
//! The engine never reads a clock; the driver is its caller and owns two:
//! intervals (flushes, checkpoints, the defrag rate) run on a monotonic clock
//! ([`BackgroundConfig::clock_ms`], [`monotonic_ms`] by default), so a wall
//! clock set back or forward neither stalls nor floods them; expiry runs on
//! [`BackgroundConfig::expiry_clock_ms`] (the wall clock by default).
//! Replicas that must agree on expiry should pass a clock that returns the
//! `now_ms` of the last applied command, so no replica reclaims a record a
//! later command could still see.
//!
//! Errors are logged (once per distinct message in a row) and counted, never
//! raised: a poisoned engine keeps the driver idle-failing until it is stopped.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::engine::{Engine, lock};
use crate::error::{Error, Result};

/// A clock returning ms.
pub type ClockMs = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Settings of the background driver.
#[derive(Clone)]
pub struct BackgroundConfig {
    /// How often the thread wakes to tick, reclaim and defragment.
    pub tick_interval_ms: u64,
    /// Defrag budget: bytes of record versions examined per second, spent
    /// at each wake (0 = no defrag).
    pub defrag_rate_bytes_per_sec: u64,
    /// Expired records reclaimed per wake at most (0 = no reclaim).
    pub reclaim_max_records_per_tick: usize,
    /// How long `stop` waits for the current step to finish before it leaves
    /// the thread to exit on its own.
    pub stop_timeout_ms: u64,
    /// The clock for flushes, checkpoints and the defrag rate: only its
    /// differences count, and it must not go back ([`monotonic_ms`]).
    pub clock_ms: ClockMs,
    /// The clock expiry is reclaimed at, Unix ms. A replica passes the
    /// largest `now_ms` it applied (the replicated clock), never its own wall
    /// clock: a record is then reclaimed only once every later command sees
    /// it expired, so replay, PITR and replicas agree. `None`: [`wall_clock_ms`].
    pub expiry_clock_ms: Option<ClockMs>,
}

impl std::fmt::Debug for BackgroundConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundConfig")
            .field("tick_interval_ms", &self.tick_interval_ms)
            .field("defrag_rate_bytes_per_sec", &self.defrag_rate_bytes_per_sec)
            .field(
                "reclaim_max_records_per_tick",
                &self.reclaim_max_records_per_tick,
            )
            .field("stop_timeout_ms", &self.stop_timeout_ms)
            .finish_non_exhaustive()
    }
}

/// Wall-clock Unix ms (0 if the clock is before 1970).
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Ms since the first call in this process, from the monotonic clock: what
/// intervals are measured on (a wall clock stepped back would hold every
/// flush and checkpoint until it caught up again).
pub fn monotonic_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Default for BackgroundConfig {
    fn default() -> Self {
        BackgroundConfig {
            tick_interval_ms: 100,
            defrag_rate_bytes_per_sec: 64 << 20,
            reclaim_max_records_per_tick: 10_000,
            stop_timeout_ms: 5_000,
            clock_ms: Arc::new(monotonic_ms),
            expiry_clock_ms: None,
        }
    }
}

/// What the driver did since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackgroundStats {
    /// Wakes that ran a step.
    pub ticks: u64,
    /// Bytes defrag examined.
    pub defrag_bytes_examined: u64,
    /// Blocks defrag emptied.
    pub defrag_blocks_done: u64,
    /// Expired records reclaimed.
    pub expired_reclaimed: u64,
    /// Failed engine calls.
    pub errors: u64,
    /// The latest failure.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Control {
    stop: bool,
    finished: bool,
    stats: BackgroundStats,
}

#[derive(Debug, Default)]
struct Shared {
    control: Mutex<Control>,
    wake: Condvar,
}

/// Marks the thread finished however it ends (a panic included), so `stop`
/// does not wait out its timeout for a thread that is gone.
struct Finished(Arc<Shared>);

impl Drop for Finished {
    fn drop(&mut self) {
        lock(&self.0.control).finished = true;
        self.0.wake.notify_all();
    }
}

/// The running driver. Stops (bounded wait) on [`BackgroundHandle::stop`] or
/// drop.
#[derive(Debug)]
pub struct BackgroundHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    stop_timeout_ms: u64,
}

impl Engine {
    /// Starts the background driver. It holds only a weak reference: it ends
    /// by itself once the engine is dropped.
    pub fn start_background(
        self: &Arc<Self>,
        config: BackgroundConfig,
    ) -> Result<BackgroundHandle> {
        let shared = Arc::new(Shared::default());
        let stop_timeout_ms = config.stop_timeout_ms;
        let worker = Worker {
            engine: Arc::downgrade(self),
            shared: shared.clone(),
            defrag_allowance_bytes: 0,
            last_ms: (config.clock_ms)(),
            config,
        };
        let thread = std::thread::Builder::new()
            .name("aerie-engine-bg".into())
            .spawn(move || worker.run())
            .map_err(Error::Spawn)?;
        Ok(BackgroundHandle {
            shared,
            thread: Some(thread),
            stop_timeout_ms,
        })
    }
}

impl BackgroundHandle {
    /// A copy of the counters.
    pub fn stats(&self) -> BackgroundStats {
        lock(&self.shared.control).stats.clone()
    }

    /// Stops the thread and joins it. Returns false if its current step did
    /// not finish within `stop_timeout_ms`; the thread then exits on its own
    /// after that step.
    pub fn stop(mut self) -> bool {
        self.halt()
    }

    fn halt(&mut self) -> bool {
        let Some(thread) = self.thread.take() else {
            return true;
        };
        let deadline = Instant::now() + Duration::from_millis(self.stop_timeout_ms);
        let mut control = lock(&self.shared.control);
        control.stop = true;
        self.shared.wake.notify_all();
        while !control.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    timeout_ms = self.stop_timeout_ms,
                    "engine background thread still busy; not joined"
                );
                return false;
            }
            control = self
                .shared
                .wake
                .wait_timeout(control, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        drop(control);
        thread.join().is_ok()
    }
}

impl Drop for BackgroundHandle {
    fn drop(&mut self) {
        self.halt();
    }
}

struct Worker {
    engine: Weak<Engine>,
    shared: Arc<Shared>,
    config: BackgroundConfig,
    /// Defrag bytes that may still be examined (negative: overspent).
    defrag_allowance_bytes: i64,
    last_ms: u64,
}

impl Worker {
    fn run(mut self) {
        let _finished = Finished(self.shared.clone());
        let interval = Duration::from_millis(self.config.tick_interval_ms.max(1));
        while self.sleep(interval) {
            let Some(engine) = self.engine.upgrade() else {
                break;
            };
            self.step(&engine);
        }
    }

    /// Waits one interval; false once stop is requested.
    fn sleep(&self, interval: Duration) -> bool {
        let control = lock(&self.shared.control);
        let (control, _) = self
            .shared
            .wake
            .wait_timeout_while(control, interval, |c| !c.stop)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !control.stop
    }

    fn step(&mut self, engine: &Engine) {
        let now_ms = (self.config.clock_ms)();
        let tick = engine.tick(now_ms);
        self.record(tick, |_, ()| {});
        if self.config.reclaim_max_records_per_tick > 0 {
            let expiry_ms = self
                .config
                .expiry_clock_ms
                .as_ref()
                .map_or_else(wall_clock_ms, |c| c());
            let reclaimed =
                engine.reclaim_expired(expiry_ms, self.config.reclaim_max_records_per_tick);
            self.record(reclaimed, |s, n| s.expired_reclaimed += n as u64);
        }
        if let Some(budget) = self.defrag_budget(now_ms) {
            let progress = engine.defrag_step(budget);
            if let Ok(p) = &progress {
                self.defrag_allowance_bytes -= i64::try_from(p.bytes_examined).unwrap_or(i64::MAX);
            }
            self.record(progress, |s, p| {
                s.defrag_bytes_examined += p.bytes_examined;
                s.defrag_blocks_done += p.blocks_done;
            });
        }
        self.last_ms = now_ms;
        lock(&self.shared.control).stats.ticks += 1;
    }

    /// Token bucket: the rate times the time since the last step, holding at
    /// most one second's worth. `None` when nothing may be examined.
    fn defrag_budget(&mut self, now_ms: u64) -> Option<u64> {
        let rate = self.config.defrag_rate_bytes_per_sec;
        if rate == 0 {
            return None;
        }
        let elapsed_ms = now_ms.saturating_sub(self.last_ms);
        let earned = u128::from(rate) * u128::from(elapsed_ms) / 1000;
        let cap = i64::try_from(rate).unwrap_or(i64::MAX);
        let earned = i64::try_from(earned).unwrap_or(i64::MAX);
        self.defrag_allowance_bytes = self.defrag_allowance_bytes.saturating_add(earned).min(cap);
        u64::try_from(self.defrag_allowance_bytes)
            .ok()
            .filter(|b| *b > 0)
    }

    /// Counts a result; a failure is logged unless it repeats the last one.
    fn record<T>(&self, result: Result<T>, count: impl FnOnce(&mut BackgroundStats, T)) {
        let mut control = lock(&self.shared.control);
        let stats = &mut control.stats;
        match result {
            Ok(v) => count(stats, v),
            Err(e) => {
                stats.errors += 1;
                let message = e.to_string();
                if stats.last_error.as_deref() != Some(message.as_str()) {
                    tracing::error!(error = %message, "engine background work failed");
                }
                stats.last_error = Some(message);
            }
        }
    }
}
