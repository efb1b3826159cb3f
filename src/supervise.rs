//! What the main thread does while the workers run: readiness once every CAN
//! interface has been tried, and watchdog pings only while every worker
//! thread shows a heartbeat (a hung thread means no ping, and systemd
//! restarts the gateway). A reload changes who must beat
//! ([`Supervision::reconfigure`]).

use crate::config::Config;
use crate::gateway::Worker;
use crate::service::{self, Heartbeat, Liveness};
use crate::status::StatusBoard;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Heartbeats of the running gateway's workers, and when to check them.
pub struct Supervision {
    liveness: Mutex<Liveness>,
    /// Every worker that must beat, by [`Worker`] (CAN threads by slot id).
    beats: Mutex<HashMap<Worker, Heartbeat>>,
    opened: AtomicUsize,
    interfaces: usize,
    ready_sent: Mutex<bool>,
    watchdog: Option<Duration>,
    next_check: Mutex<Option<Instant>>,
}

impl Supervision {
    /// For `config` running on `board`.
    pub fn new(config: &Config, board: &StatusBoard) -> Supervision {
        let liveness = Liveness::new();
        let combiner = liveness.register("combiner");
        let watchdog = service::watchdog_interval();
        let supervision = Supervision {
            liveness: Mutex::new(liveness),
            beats: Mutex::new(HashMap::from([(Worker::Combiner, combiner)])),
            opened: AtomicUsize::new(0),
            interfaces: config.inputs.len() + config.outputs.len(),
            ready_sent: Mutex::new(false),
            watchdog,
            next_check: Mutex::new(watchdog.map(|w| Instant::now() + w)),
        };
        supervision.reconfigure(config, board);
        supervision
    }

    /// After a reload: the CAN threads of `board` must beat from now on,
    /// those of interfaces no longer configured no longer.
    pub fn reconfigure(&self, config: &Config, board: &StatusBoard) {
        let mut wanted: Vec<(Worker, String)> = Vec::new();
        for (i, c) in config.inputs.iter().enumerate() {
            let label = format!("battery {} ({})", i + 1, c.can_if);
            wanted.push((Worker::Input(board.input_slot(i).id), label));
        }
        for (j, c) in config.outputs.iter().enumerate() {
            let label = format!("inverter {} ({})", j + 1, c.can_if);
            wanted.push((Worker::Output(board.output_slot(j).id), label));
        }
        let liveness = self.liveness.lock().unwrap_or_else(|p| p.into_inner());
        let mut beats = self.beats.lock().unwrap_or_else(|p| p.into_inner());
        beats.retain(|w, beat| {
            let keep = *w == Worker::Combiner || wanted.iter().any(|(x, _)| x == w);
            if !keep {
                liveness.forget(beat);
            }
            keep
        });
        for (worker, label) in wanted {
            beats.entry(worker).or_insert_with(|| liveness.register(&label));
        }
    }

    /// Called by the workers.
    pub fn heartbeat(&self, worker: Worker) {
        if let Some(beat) = self.beats.lock().unwrap_or_else(|p| p.into_inner()).get(&worker) {
            beat.beat();
        }
    }

    /// Called by each CAN thread once its interface has been tried.
    pub fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// Called by the main thread a few times per second.
    pub fn poll(&self, now: Instant) {
        let mut ready = self.ready_sent.lock().unwrap_or_else(|p| p.into_inner());
        if !*ready && self.opened.load(Ordering::Relaxed) >= self.interfaces {
            *ready = true;
            service::notify_ready();
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
            Ok(()) => service::notify_watchdog(),
            Err(hung) => log::error!("no heartbeat from {}: not pinging the watchdog", hung.join(", ")),
        }
    }
}
