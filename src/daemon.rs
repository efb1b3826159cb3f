//! `bms-gateway [-c FILE]`: the gateway as a long-running daemon on SocketCAN,
//! with MQTT, signals, reload and systemd integration.

use crate::can::socket::SocketCan;
use crate::config::{self, Config};
use crate::energy;
use crate::events::{Events, Kind, Subject};
use crate::gateway::{COMMAND_QUEUE, Fault, Gateway};
use crate::recorder::{Reason, Recorder};
use crate::setpoint::SetpointCommand;
use crate::signals::{self, Signal};
use crate::state_store::{self, Store};
use crate::status::StatusBoard;
use crate::supervise::Supervision;
use crate::{shutdown, systemd};
use crossbeam_channel::{bounded, select};
use std::path::Path;
use std::time::{Duration, Instant};

/// The main thread's wait when no watchdog check is due: only a signal or
/// READY wakes it.
const IDLE_FOREVER: Duration = Duration::from_secs(24 * 3600);

/// How one gateway run ended.
enum Ended {
    Stop,
    Reload(Box<Config>),
}

/// What one run hands to the next (after a reload) and to the final save.
struct Carry {
    store: Option<Store>,
    energy: energy::Saved,
    events: Events,
}

/// Runs until SIGTERM or SIGINT. Errors are for the log and the exit code.
pub fn run(path: &Path, mut config: Config) -> Result<(), String> {
    let (signals, handle) = signals::listen().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let fault = Fault::parse(std::env::var("BMS_GATEWAY_FAULT").ok().as_deref());
    log::info!(
        "bms-gateway {} starting: {} batteries, {} inverters, config {}",
        env!("CARGO_PKG_VERSION"),
        config.inputs.len(),
        config.outputs.len(),
        path.display()
    );
    let mut carry = open_state(&config);
    loop {
        match run_once(path, &config, &signals, fault, &mut carry) {
            Ended::Stop => break,
            Ended::Reload(new) => {
                let message = format!("configuration reloaded from {}: restarting the workers", path.display());
                log::info!("{message}");
                carry.events.emit(Kind::ConfigReloaded, Subject::System, message);
                config = *new;
            }
        }
    }
    handle.close();
    log::info!("bms-gateway stopped");
    Ok(())
}

fn open_state(config: &Config) -> Carry {
    let (store, energy) = match state_store::resolve(config.state_dir.as_deref()) {
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
    };
    Carry {
        store,
        energy,
        events: Events::default(),
    }
}

fn run_once(
    path: &Path,
    config: &Config,
    signals: &crossbeam_channel::Receiver<Signal>,
    fault: Fault,
    carry: &mut Carry,
) -> Ended {
    let state_dir = state_store::resolve(config.state_dir.as_deref());
    let recorder = Recorder::new(config, state_dir.as_deref());
    let board = StatusBoard::new(config.inputs.len(), config.outputs.len()).with_recorder(recorder);
    let opener = board.recorder.opener(&SocketCan);
    state_store::seed(&board, config, &carry.energy);
    board.events.take_from(&carry.events);
    let supervision = Supervision::new(config);
    let (stop_tx, stop) = shutdown::channel();
    let (commands_tx, commands) = bounded::<SetpointCommand>(COMMAND_QUEUE);
    let gateway = Gateway {
        config,
        opener: &opener,
        board: &board,
        opened: &|| supervision.opened(),
        heartbeat: &|w| supervision.heartbeat(w),
        heartbeat_every: supervision.heartbeat_every(),
        fault,
    };
    let ended = std::thread::scope(|s| {
        let stop = &stop;
        s.spawn(|| gateway.run(stop, &commands));
        s.spawn(|| board.recorder.run(&board.events, stop));
        if config.mqtt.activated {
            let (board, commands_tx) = (&board, &commands_tx);
            s.spawn(move || crate::mqtt::run(config, board, commands_tx, stop));
        }
        if config.http.activated {
            let board = &board;
            s.spawn(move || crate::http::run(config, board, stop));
        }
        if let Some(store) = carry.store.as_mut() {
            let board = &board;
            s.spawn(move || state_store::keep_saving(store, board, config, stop));
        }
        // Wakes for a signal, once every interface has been tried (READY),
        // and at each watchdog check; never otherwise.
        let mut next_check = supervision.poll(Instant::now(), &board);
        let ended = loop {
            let wait = next_check.map_or(IDLE_FOREVER, |at| at.saturating_duration_since(Instant::now()));
            select! {
                recv(signals) -> sig => match sig {
                    Ok(Signal::Record) => board.recorder.trigger(Reason::Signal),
                    Ok(Signal::Reload) => {
                        systemd::notify_reloading();
                        if let Some(new) = reload(path, &board.events) {
                            break Ended::Reload(Box::new(new));
                        }
                        systemd::notify_ready();
                    }
                    _ => {
                        log::info!("stop requested");
                        break Ended::Stop;
                    }
                },
                recv(supervision.all_opened()) -> _ => next_check = supervision.poll(Instant::now(), &board),
                default(wait) => next_check = supervision.poll(Instant::now(), &board),
            }
        };
        if matches!(ended, Ended::Stop) {
            systemd::notify_stopping();
        }
        drop(stop_tx);
        ended
    });
    // Every worker has ended: these are the final counters.
    let state = state_store::capture(&board, config);
    if let Some(store) = carry.store.as_mut() {
        let _ = store.save(&state);
    }
    carry.energy = state.energy;
    carry.events.take_from(&board.events);
    ended
}

/// Loads the configuration for a reload; `None` (with the reason logged) keeps
/// the running one.
fn reload(path: &Path, events: &Events) -> Option<Config> {
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
