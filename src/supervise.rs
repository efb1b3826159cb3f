//! What the main thread does while the workers run: readiness once every CAN
//! interface has been tried, and watchdog pings only while every worker
//! thread shows a heartbeat (a hung thread means no ping, and systemd
//! restarts the gateway). A reload changes who must beat
//! ([`Supervision::reconfigure`]).

use crate::config::Config;
use crate::liveness::{HEARTBEAT, Heartbeat, Liveness, Worker};
use crate::status::StatusBoard;
use crate::sync::{Bell, lock};
use crate::systemd;
use crossbeam_channel::Receiver;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Heartbeats of the running gateway's workers, and when to check them.
pub struct Supervision {
    /// The STATUS= line last sent.
    status_sent: Mutex<String>,
    liveness: Mutex<Liveness>,
    /// Every worker that must beat, by [`Worker`] (CAN threads by slot id).
    beats: Mutex<HashMap<Worker, Heartbeat>>,
    opened: AtomicUsize,
    interfaces: usize,
    ready_sent: Mutex<bool>,
    /// Wakes the main thread once every interface has been tried.
    all_opened: Bell,
    watchdog: Option<Duration>,
    next_check: Mutex<Option<Instant>>,
}

impl Supervision {
    /// For `config` running on `board`.
    pub fn new(config: &Config, board: &StatusBoard) -> Supervision {
        let liveness = Liveness::new();
        let combiner = liveness.register("combiner");
        let watchdog = systemd::watchdog_interval();
        let supervision = Supervision {
            status_sent: Mutex::new(String::new()),
            liveness: Mutex::new(liveness),
            beats: Mutex::new(HashMap::from([(Worker::Combiner, combiner)])),
            opened: AtomicUsize::new(0),
            interfaces: config.inputs.len() + config.outputs.len(),
            ready_sent: Mutex::new(false),
            all_opened: Bell::default(),
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
        let liveness = lock(&self.liveness);
        let mut beats = lock(&self.beats);
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
        if let Some(beat) = lock(&self.beats).get(&worker) {
            beat.beat();
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
            self.all_opened.ring();
        }
    }

    /// Receives once every CAN interface has been tried: the main thread
    /// waits on it (and the signals) instead of polling.
    pub fn all_opened(&self) -> &Receiver<()> {
        self.all_opened.receiver()
    }

    /// Sends READY once every interface has been tried, the STATUS= line
    /// when it changed, and pings the watchdog when a check is due and every
    /// worker beat since the last. Returns when to call it again (`None`:
    /// only once every interface is tried, see [`Supervision::all_opened`]).
    pub fn poll(&self, now: Instant, board: &StatusBoard) -> Option<Instant> {
        self.status(board);
        let mut ready = lock(&self.ready_sent);
        if !*ready && self.opened.load(Ordering::Relaxed) >= self.interfaces {
            *ready = true;
            systemd::notify_ready();
            log::debug!("ready: all {} CAN interfaces tried", self.interfaces);
        }
        let period = self.watchdog?;
        let mut next = lock(&self.next_check);
        if let Some(at) = *next
            && now < at
        {
            return Some(at);
        }
        *next = Some(now + period);
        match lock(&self.liveness).all_alive_since_last_check() {
            Ok(()) => systemd::notify_watchdog(),
            Err(hung) => log::error!("no heartbeat from {}: not pinging the watchdog", hung.join(", ")),
        }
        *next
    }

    /// Sends systemd's STATUS= line when it changes (at READY and at each
    /// watchdog check: the main thread wakes for nothing else).
    fn status(&self, board: &StatusBoard) {
        let line = board.summary();
        let mut sent = lock(&self.status_sent);
        if *sent != line {
            systemd::notify_status(&line);
            *sent = line;
        }
    }
}
