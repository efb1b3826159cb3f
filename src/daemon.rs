//! `bms-gateway [-c FILE]`: the gateway as a long-running daemon on SocketCAN,
//! with MQTT, signals, reload and systemd integration.

use crate::can::socket::SocketCan;
use crate::config::{self, Config};
use crate::gateway::{COMMAND_QUEUE, Fault, Gateway};
use crate::setpoint::SetpointCommand;
use crate::signals::{self, Signal};
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
    loop {
        match run_once(path, &config, &signals, fault) {
            Ended::Stop => break,
            Ended::Reload(new) => {
                log::info!("configuration reloaded from {}: restarting the workers", path.display());
                config = *new;
            }
        }
    }
    handle.close();
    log::info!("bms-gateway stopped");
    Ok(())
}

fn run_once(path: &Path, config: &Config, signals: &crossbeam_channel::Receiver<Signal>, fault: Fault) -> Ended {
    let board = StatusBoard::new(config.inputs.len(), config.outputs.len());
    let supervision = Supervision::new(config);
    let (stop_tx, stop) = shutdown::channel();
    let (commands_tx, commands) = bounded::<SetpointCommand>(COMMAND_QUEUE);
    let gateway = Gateway {
        config,
        opener: &SocketCan,
        board: &board,
        opened: &|| supervision.opened(),
        heartbeat: &|w| supervision.heartbeat(w),
        heartbeat_every: supervision.heartbeat_every(),
        fault,
    };
    std::thread::scope(|s| {
        let stop = &stop;
        s.spawn(|| gateway.run(stop, &commands));
        if config.mqtt.activated {
            let (board, commands_tx) = (&board, &commands_tx);
            s.spawn(move || crate::mqtt::run(config, board, commands_tx, stop));
        }
        // Wakes for a signal, once every interface has been tried (READY),
        // and at each watchdog check; never otherwise.
        let mut next_check = supervision.poll(Instant::now(), &board);
        let ended = loop {
            let wait = next_check.map_or(IDLE_FOREVER, |at| at.saturating_duration_since(Instant::now()));
            select! {
                recv(signals) -> sig => match sig {
                    Ok(Signal::Reload) => {
                        systemd::notify_reloading();
                        if let Some(new) = reload(path) {
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
    })
}

/// Loads the configuration for a reload; `None` (with the reason logged) keeps
/// the running one.
fn reload(path: &Path) -> Option<Config> {
    match config::load(path) {
        Ok(c) if c.gateway_activated => Some(c),
        Ok(_) => {
            log::error!(
                "reload refused: GATEWAY-ACTIVATED is false in {}; keeping the running configuration",
                path.display()
            );
            None
        }
        Err(e) => {
            log::error!("reload refused, keeping the running configuration: {e}");
            None
        }
    }
}
