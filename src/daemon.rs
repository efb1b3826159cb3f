//! `bms-gateway [-c FILE]`: the gateway as a long-running daemon on SocketCAN,
//! with MQTT, signals, reload and systemd integration.
//!
//! A reload (SIGHUP) never stops the gateway (docs/reload.md): the new
//! configuration goes to the running gateway, which keeps what it still has,
//! and MQTT restarts in a lane of its own, so that a slow broker delays only
//! MQTT. The status server and the state saver keep running and follow the
//! new configuration ([`Latest`]).

use crate::can::socket::SocketCan;
use crate::config::{self, Config};
use crate::energy;
use crate::events::{Events, Kind, Subject};
use crate::gateway::{COMMAND_QUEUE, Fault, Gateway, Reload};
use crate::mqtt::{self, command};
use crate::recorder::{Reason, Recorder};
use crate::reload::Mapping;
use crate::setpoint::{Dropped, SetpointCommand};
use crate::signals::{self, Signal};
use crate::state_store::{self, Store};
use crate::status::{Latest, StatusBoard};
use crate::supervise::Supervision;
use crate::sync::spawn;
use crate::{shutdown, systemd};
use crossbeam_channel::{Receiver, RecvError, Sender, bounded, never, select};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The main thread's wait when no watchdog check is due: only a signal or
/// READY wakes it.
const IDLE_FOREVER: Duration = Duration::from_secs(24 * 3600);

/// How long the start of MQTT, HTTP and the state saver waits for every
/// CAN interface to be tried (at once, unless a CAN thread cannot start).
const CAN_FIRST: Duration = Duration::from_secs(1);

/// How long a reload waits for the gateway to take the new configuration
/// (it takes it within a few hundred milliseconds unless a thread hangs).
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// The configuration in effect, and its status board.
struct Running {
    config: Arc<Config>,
    board: Arc<StatusBoard>,
}

/// One run of the MQTT side: with a configuration, a board, where its
/// commands go, and the results to publish once connected.
struct MqttRun {
    config: Arc<Config>,
    board: Arc<StatusBoard>,
    commands: Sender<SetpointCommand>,
    results: Vec<String>,
    /// The config_reloaded event of the reload that made this run, raised by
    /// the lane once the run before has stopped (see [`mqtt_lane`]).
    reloaded: Option<String>,
}

/// Runs until SIGTERM or SIGINT. Errors are for the log and the exit code.
pub fn run(path: &Path, config: Config) -> Result<(), String> {
    let (signals, handle) = signals::listen().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let fault = Fault::parse(std::env::var("BMS_GATEWAY_FAULT").ok().as_deref());
    log::info!(
        "bms-gateway {} starting: {} batteries, {} inverters, config {}",
        env!("CARGO_PKG_VERSION"),
        config.inputs.len(),
        config.outputs.len(),
        path.display()
    );
    let (mut store, saved) = open_state(&config);
    let state_dir = state_store::resolve(config.state_dir.as_deref());
    // Made here and handed to the threads that use them: both outlive
    // every reload.
    let recorder = Recorder::new(&config, state_dir.as_deref());
    let events = Events::default();
    let mut running = Running {
        board: Arc::new(StatusBoard::new(config.inputs.len(), config.outputs.len())),
        config: Arc::new(config),
    };
    state_store::seed(&running.board, &running.config, &saved);
    if let Some((Some(history), _)) = store.as_ref().map(Store::load_history) {
        state_store::seed_history(&running.board, &history);
    }
    let latest = Latest::new(running.config.clone(), running.board.clone());
    let supervision = Supervision::new(&running.config, &running.board);
    let (stop_tx, stop) = shutdown::channel();
    let (commands_tx, commands) = bounded::<SetpointCommand>(COMMAND_QUEUE);
    let (reload_tx, reloads) = bounded::<Reload>(1);
    let (mqtt_tx, mqtt_runs) = bounded::<MqttRun>(4);
    let first = running.config.clone();
    let board = running.board.clone();
    // Every CAN and serial port goes through the flight recorder, which a reload keeps.
    let opener = recorder.opener(&SocketCan);
    let serial = recorder.serial_opener(&crate::serial::device::Devices);
    let gateway = Gateway {
        config: &first,
        opener: &opener,
        serial: &serial,
        board: &board,
        events: &events,
        recorder: &recorder,
        opened: &|| supervision.opened(),
        heartbeat: &|w| supervision.heartbeat(w),
        heartbeat_every: supervision.heartbeat_every(),
        fault,
    };
    let running = std::thread::scope(|s| {
        // Named, so that `top -H` and the benchmarks tell them apart.
        spawn(s, "gateway".into(), || gateway.run_reloading(&stop, commands, &reloads));
        let events = &events;
        spawn(s, "mqtt-lane".into(), move || mqtt_lane(&mqtt_runs, events));
        spawn(s, "recorder".into(), || recorder.run(events, &stop));
        // CAN first: the interfaces are tried before MQTT, HTTP and the state
        // saver start, so that those never compete with the first frames.
        let _ = supervision.all_opened().recv_timeout(CAN_FIRST);
        start_mqtt(&mqtt_tx, &running, commands_tx, Vec::new(), None, events);
        if first.http.activated {
            let (first, latest, recorder, stop) = (&first, &latest, &recorder, &stop);
            spawn(s, "http".into(), move || {
                crate::http::run_latest(first, latest, events, recorder, stop)
            });
        }
        if let Some(store) = store.as_mut() {
            let (latest, stop) = (&latest, &stop);
            spawn(s, "state-saver".into(), move || {
                state_store::keep_saving(store, latest, stop)
            });
        }
        // Wakes for a signal, once every interface has been tried (READY),
        // and at each watchdog check; never otherwise.
        let mut next_check = supervision.poll(Instant::now(), &running.board);
        loop {
            let wait = next_check.map_or(IDLE_FOREVER, |at| at.saturating_duration_since(Instant::now()));
            select! {
                recv(signals) -> sig => match sig {
                    Ok(Signal::Record) => recorder.trigger(Reason::Signal),
                    Ok(Signal::Reload) => {
                        systemd::notify_reloading();
                        if let Some(new) = load(path, events) {
                            running = reload(path, running, new, &reload_tx, &mqtt_tx, &supervision, events);
                            latest.set(running.config.clone(), running.board.clone());
                        }
                        systemd::notify_ready();
                    }
                    _ => {
                        log::info!("stop requested");
                        break;
                    }
                },
                recv(supervision.all_opened()) -> _ => next_check = supervision.poll(Instant::now(), &running.board),
                default(wait) => next_check = supervision.poll(Instant::now(), &running.board),
            }
        }
        systemd::notify_stopping();
        drop(stop_tx);
        drop(mqtt_tx);
        running
    });
    // Every worker has ended: these are the final counters.
    if let Some(store) = store.as_mut() {
        let _ = store.save(&state_store::capture(&running.board, &running.config));
        let _ = store.save_history(&running.board);
    }
    handle.close();
    log::info!("bms-gateway stopped");
    Ok(())
}

/// Hands `new` to the running gateway and restarts MQTT beside it; returns
/// what is running afterwards.
fn reload(
    path: &Path,
    running: Running,
    new: Config,
    gateway: &Sender<Reload>,
    mqtt: &Sender<MqttRun>,
    supervision: &Supervision,
    events: &Events,
) -> Running {
    let new = Arc::new(new);
    warn_unmoved(&running.config, &new);
    let mapping = Mapping::between(&running.config, &new);
    let board = Arc::new(running.board.reconfigure(&mapping));
    let (commands_tx, commands) = bounded(COMMAND_QUEUE);
    let (done_tx, done) = bounded(1);
    supervision.reconfigure(&new, &board);
    let reload = Reload {
        config: new.clone(),
        mapping,
        board: board.clone(),
        commands,
        done: done_tx,
    };
    if gateway.try_send(reload).is_err() {
        log::error!("reload refused: the gateway has not taken the previous configuration yet; send SIGHUP again");
        return running;
    }
    let dropped = match done.recv_timeout(APPLY_WAIT) {
        Ok(dropped) => dropped,
        Err(_) => {
            log::error!("the gateway did not take the new configuration within {APPLY_WAIT:?}");
            Vec::new()
        }
    };
    let results = report_dropped(&running.config, &new, &dropped);
    let now = Running { config: new, board };
    let message = format!(
        "configuration reloaded from {}: {} batteries, {} inverters",
        path.display(),
        now.config.inputs.len(),
        now.config.outputs.len()
    );
    log::info!("{message}");
    start_mqtt(mqtt, &now, commands_tx, results, Some(message), events);
    now
}

/// The status server, the flight recorder, the dead-interface settings and
/// the state directory stay as they started
/// (docs/reload.md): a reload that changes them says so.
fn warn_unmoved(old: &Config, new: &Config) {
    if old.http != new.http {
        log::warn!("reload: [http] changes take effect at the next start; the status server keeps running as it is");
    }
    if old.recorder != new.recorder {
        log::warn!(
            "reload: [recorder] changes take effect at the next start; the flight recorder keeps running as it is"
        );
    }
    if old.can != new.can {
        log::warn!(
            "reload: [can] changes take effect at the next start; the CAN threads keep judging dead interfaces as before"
        );
    }
    if old.state_dir != new.state_dir {
        log::warn!(
            "reload: a new STATE-DIR takes effect at the next start; the counters are still saved where they were"
        );
    }
}

/// Logs each setpoint a reload dropped; returns their BASE/set/result payloads.
fn report_dropped(old: &Config, new: &Config, dropped: &[Dropped]) -> Vec<String> {
    dropped
        .iter()
        .map(|d| {
            let can_if = &old.outputs[d.inverter].can_if;
            log::warn!(
                "reload: inverter {} ({can_if}) is no longer configured: its {} setpoint of {} A is dropped",
                d.inverter + 1,
                d.kind.field(),
                d.setpoint.value
            );
            command::dropped_json(&new.mqtt.base_topic, d, can_if)
        })
        .collect()
}

fn start_mqtt(
    lane: &Sender<MqttRun>,
    running: &Running,
    commands: Sender<SetpointCommand>,
    results: Vec<String>,
    reloaded: Option<String>,
    events: &Events,
) {
    let run = MqttRun {
        config: running.config.clone(),
        board: running.board.clone(),
        commands,
        results,
        reloaded,
    };
    if let Err(refused) = lane.try_send(run) {
        log::error!("MQTT is still restarting from earlier reloads; it keeps the configuration it has");
        announce(refused.into_inner(), events);
    }
}

/// Raises a run's config_reloaded event, once.
fn announce(mut run: MqttRun, events: &Events) -> MqttRun {
    if let Some(message) = run.reloaded.take() {
        events.emit(Kind::ConfigReloaded, Subject::System, message);
    }
    run
}

/// The MQTT lane: one MQTT run at a time, each stopped before the next
/// starts, so that the broker sees them in order. Ends when `runs` is
/// disconnected.
///
/// A reload's config_reloaded event is raised here, after the run before
/// has stopped: raised earlier, that run could still take it and queue it
/// behind its in-flight messages, then disconnect with it unsent, while the
/// shared "published" mark says it went out. The new run publishes it.
///
/// A run says "offline" when it stops unless the newest run queued then
/// connects the same way ([`mqtt::Link`]): that one says "online" again at
/// once, so Home Assistant sees no flicker. A run handed over to is started
/// even when newer ones came meanwhile (they stop it in turn, and it decides
/// for itself); otherwise only the newest matters. Known limit: stopped
/// before it connected, that run says nothing, so two reloads within about
/// a second, the second changing the connection, can leave "online" on the
/// first one's topic (a short farewell connection would close it).
fn mqtt_lane(runs: &Receiver<MqttRun>, events: &Events) {
    let Ok(first) = runs.recv() else { return };
    let mut next = newest(vec![first], runs, events);
    loop {
        let (queued, handed_over) = run_until_next(next, runs, events);
        let Ok(queued) = queued else { return };
        next = if handed_over {
            newest(queued, &never(), events)
        } else {
            newest(queued, runs, events)
        };
    }
}

/// Announces `queued` and any run waiting in `runs`, in order; the last.
fn newest(queued: Vec<MqttRun>, runs: &Receiver<MqttRun>, events: &Events) -> MqttRun {
    let mut last = None;
    for run in queued.into_iter().chain(runs.try_iter()) {
        last = Some(announce(run, events));
    }
    last.expect("at least one run")
}

/// Runs `run` until the next runs come (all of them, oldest first), and
/// whether it handed over to the newest of them.
fn run_until_next(run: MqttRun, runs: &Receiver<MqttRun>, events: &Events) -> (Result<Vec<MqttRun>, RecvError>, bool) {
    if !run.config.mqtt.activated {
        return (runs.recv().map(|f| vec![f]), false);
    }
    let link = mqtt::Link::of(&run.config);
    let ending = mqtt::Ending::default();
    std::thread::scope(|s| {
        let (stop_tx, stop) = shutdown::channel();
        let ending = &ending;
        spawn(s, "mqtt".into(), move || {
            mqtt::run_after_reload(
                &run.config,
                &run.board,
                events,
                &run.commands,
                &stop,
                run.results,
                ending,
            )
        });
        let queued = runs
            .recv()
            .map(|f| std::iter::once(f).chain(runs.try_iter()).collect::<Vec<_>>());
        let same = queued
            .as_ref()
            .ok()
            .and_then(|q| q.last())
            .is_some_and(|newest| newest.config.mqtt.activated && mqtt::Link::of(&newest.config) == link);
        if same {
            ending.hand_over();
        }
        drop(stop_tx);
        (queued, same)
    })
}

/// Loads the configuration for a reload; `None` (with the reason logged and
/// raised as an event on `events`) keeps the running one.
fn load(path: &Path, events: &Events) -> Option<Config> {
    let refused = match config::load(path) {
        Ok(c) if c.gateway_activated => return Some(c),
        Ok(_) => format!(
            "reload refused: GATEWAY-ACTIVATED is false in {}; keeping the running configuration",
            path.display()
        ),
        Err(e) => format!("reload refused, keeping the running configuration: {e}"),
    };
    log::error!("{refused}");
    events.emit(Kind::ConfigRejected, Subject::System, refused);
    None
}

/// Opens the state directory: the store (if there is a directory) and the
/// energy counters saved there.
fn open_state(config: &Config) -> (Option<Store>, energy::Saved) {
    match state_store::resolve(config.state_dir.as_deref()) {
        Some(dir) => {
            let (store, state, _) = Store::open(&dir);
            (Some(store), state.energy)
        }
        None => {
            log::error!(
                "no state directory: STATE-DIR is not set and neither $STATE_DIRECTORY nor $HOME is; \
                 energy counters will not survive a restart"
            );
            (None, energy::Saved::default())
        }
    }
}
