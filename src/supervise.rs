//! What the main thread does while the workers run: readiness once every CAN
//! interface has been tried, and watchdog pings only while every worker
//! thread shows a heartbeat (a hung thread means no ping, and systemd
//! restarts the gateway).

use crate::config::Config;
use crate::gateway::Worker;
use crate::liveness::{Heartbeat, Liveness};
use crate::status::StatusBoard;
use crate::systemd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Heartbeats of one gateway run, and when to check them.
pub struct Supervision {
    liveness: Mutex<Liveness>,
    inputs: Vec<Heartbeat>,
    outputs: Vec<Heartbeat>,
    combiner: Heartbeat,
    opened: AtomicUsize,
    interfaces: usize,
    ready_sent: Mutex<bool>,
    watchdog: Option<Duration>,
    next_check: Mutex<Option<Instant>>,
    /// The STATUS= line last sent.
    status_sent: Mutex<String>,
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
        Supervision {
            liveness: Mutex::new(liveness),
            inputs,
            outputs,
            combiner,
            opened: AtomicUsize::new(0),
            interfaces: config.inputs.len() + config.outputs.len(),
            ready_sent: Mutex::new(false),
            watchdog,
            next_check: Mutex::new(watchdog.map(|w| Instant::now() + w)),
            status_sent: Mutex::new(String::new()),
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

    /// Called by each CAN thread once its interface has been tried.
    pub fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// Called by the main thread a few times per second.
    pub fn poll(&self, now: Instant, board: &StatusBoard) {
        self.status(board);
        let mut ready = self.ready_sent.lock().unwrap_or_else(|p| p.into_inner());
        if !*ready && self.opened.load(Ordering::Relaxed) >= self.interfaces {
            *ready = true;
            systemd::notify_ready();
            log::debug!("ready: all {} CAN interfaces tried", self.interfaces);
        }
        let Some(period) = self.watchdog else { return };
        let mut next = self.next_check.lock().unwrap_or_else(|p| p.into_inner());
        if next.is_some_and(|at| now < at) {
            return;
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
    }

    /// Sends systemd's STATUS= line when it changes.
    fn status(&self, board: &StatusBoard) {
        let line = board.summary();
        let mut sent = self.status_sent.lock().unwrap_or_else(|p| p.into_inner());
        if *sent != line {
            systemd::notify_status(&line);
            *sent = line;
        }
    }
}
