//! What the main thread does while the workers run: readiness once every CAN
//! interface has been tried, and watchdog pings only while every worker
//! thread shows a heartbeat (a hung thread means no ping, and systemd
//! restarts the gateway).

use crate::config::Config;
use crate::gateway::{HEARTBEAT, Worker};
use crate::liveness::{Heartbeat, Liveness};
use crate::status::StatusBoard;
use crate::systemd;
use crossbeam_channel::{Receiver, Sender, bounded};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Heartbeats of one gateway run, and when to check them.
pub struct Supervision {
    /// The STATUS= line last sent.
    status_sent: Mutex<String>,
    liveness: Mutex<Liveness>,
    inputs: Vec<Heartbeat>,
    outputs: Vec<Heartbeat>,
    combiner: Heartbeat,
    opened: AtomicUsize,
    interfaces: usize,
    ready_sent: Mutex<bool>,
    /// Wakes the main thread once every interface has been tried.
    all_opened_tx: Sender<()>,
    all_opened_rx: Receiver<()>,
    watchdog: Option<Duration>,
    next_check: Mutex<Option<Instant>>,
}

impl Supervision {
    pub fn new(config: &Config) -> Supervision {
        let liveness = Liveness::new();
        let inputs = config
            .inputs
            .iter()
            .enumerate()
            .map(|(i, c)| liveness.register(&format!("battery {} ({})", i + 1, c.can_if)))
            .collect();
        let outputs = config
            .outputs
            .iter()
            .enumerate()
            .map(|(j, c)| liveness.register(&format!("inverter {} ({})", j + 1, c.can_if)))
            .collect();
        let combiner = liveness.register("combiner");
        let watchdog = systemd::watchdog_interval();
        let (all_opened_tx, all_opened_rx) = bounded(1);
        Supervision {
            status_sent: Mutex::new(String::new()),
            liveness: Mutex::new(liveness),
            inputs,
            outputs,
            combiner,
            opened: AtomicUsize::new(0),
            interfaces: config.inputs.len() + config.outputs.len(),
            ready_sent: Mutex::new(false),
            all_opened_tx,
            all_opened_rx,
            watchdog,
            next_check: Mutex::new(watchdog.map(|w| Instant::now() + w)),
        }
    }

    /// Called by the workers.
    pub fn heartbeat(&self, worker: Worker) {
        match worker {
            Worker::Input(i) => self.inputs[i].beat(),
            Worker::Output(j) => self.outputs[j].beat(),
            Worker::Combiner => self.combiner.beat(),
        }
    }

    /// How often each worker must beat while idle: twice per watchdog
    /// check, so that every check window holds a beat (a quarter of
    /// `WatchdogSec=`), and [`HEARTBEAT`] when no watchdog checks them. A
    /// beat is a wake-up: idle, the beats are most of the gateway's cost.
    pub fn heartbeat_every(&self) -> Duration {
        self.watchdog.map_or(HEARTBEAT, |check| (check / 2).min(HEARTBEAT))
    }

    /// Called by each CAN thread once its interface has been tried.
    pub fn opened(&self) {
        let before = self.opened.fetch_add(1, Ordering::Relaxed);
        if before + 1 == self.interfaces {
            // Full: the main thread has a wake-up pending already.
            let _ = self.all_opened_tx.try_send(());
        }
    }

    /// Receives once every CAN interface has been tried: the main thread
    /// waits on it (and the signals) instead of polling.
    pub fn all_opened(&self) -> &Receiver<()> {
        &self.all_opened_rx
    }

    /// Sends READY once every interface has been tried, the STATUS= line
    /// when it changed, and pings the watchdog when a check is due and every
    /// worker beat since the last. Returns when to call it again (`None`:
    /// only once every interface is tried, see [`Supervision::all_opened`]).
    pub fn poll(&self, now: Instant, board: &StatusBoard) -> Option<Instant> {
        self.status(board);
        let mut ready = self.ready_sent.lock().unwrap_or_else(|p| p.into_inner());
        if !*ready && self.opened.load(Ordering::Relaxed) >= self.interfaces {
            *ready = true;
            systemd::notify_ready();
            log::debug!("ready: all {} CAN interfaces tried", self.interfaces);
        }
        let period = self.watchdog?;
        let mut next = self.next_check.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = *next
            && now < at
        {
            return Some(at);
        }
        *next = Some(now + period);
        match self
            .liveness
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .all_alive_since_last_check()
        {
            Ok(()) => systemd::notify_watchdog(),
            Err(hung) => log::error!("no heartbeat from {}: not pinging the watchdog", hung.join(", ")),
        }
        *next
    }

    /// Sends systemd's STATUS= line when it changes (at READY and at each
    /// watchdog check: the main thread wakes for nothing else).
    fn status(&self, board: &StatusBoard) {
        let line = board.summary();
        let mut sent = self.status_sent.lock().unwrap_or_else(|p| p.into_inner());
        if *sent != line {
            systemd::notify_status(&line);
            *sent = line;
        }
    }
}
