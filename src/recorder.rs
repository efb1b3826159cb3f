//! The flight recorder (docs/recorder.md): every frame received and sent on
//! every CAN interface goes into a fixed-size ring in memory (and every
//! RS485 exchange into a second one, [`serial`]), and a dump
//! writes the last `[recorder] SECONDS` of it as a candump `-l` file to
//! `STATE-DIR/recordings/` on entering degraded or safe, on SIGUSR1, and when
//! `bms-gateway record` asks through the status server.
//!
//! The CAN threads only copy a frame into the ring under one short lock; the
//! ring is allocated once, when the recorder is made. Recording happens in
//! [`Recording`], a [`CanOpener`] wrapped around the real one, so that the
//! input and output threads need not know about it. Dumps run in their own
//! thread ([`Recorder::run`]): it copies the ring a chunk at a time (a CAN
//! thread waits at most for one chunk), and a slow, full or read-only disk
//! delays only that thread; its errors are logged rate-limited.

pub mod dump;
pub mod ring;
pub mod serial;

use crate::can::LinkState;
use crate::can::{CanError, CanOpener, CanPort, Wake};
use crate::combine::SystemState;
use crate::config::{Config, InputConfig};
use crate::events::{Events, Kind, Subject};
use crate::frame::Frame;
use crate::loglimit::{LogLimit, Repeats};
use crate::serial::SerialOpener;
use crate::shutdown::Stop;
use crate::sync::lock;
use crossbeam_channel::{Receiver, Sender, bounded, select};
use ring::{Entry, Ring};
use serial::{Direction, SerialEntry, SerialRecording};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The frame rate the ring is sized for on a battery interface: a
/// Pylontech BMS sends a burst of 7 to 9 frames once a second (some twice),
/// plus the gateway's own 0x305 when polled: 20 leaves room.
pub const INPUT_RATE: usize = 20;
/// The frame rate the ring is sized for on an inverter interface: 8 to 12
/// frames per transmission at one or two transmissions a second, and the
/// inverter's own few frames: 40 leaves room.
pub const OUTPUT_RATE: usize = 40;
/// Serial entries ([`serial::BYTES`] each) the serial ring is sized for per
/// poll cycle of an RS485 battery: a cycle is 2 requests and 2 answers,
/// every tenth 3 of each (0x44); 6 leaves room for noise and the hourly
/// static commands.
pub const SERIAL_PER_CYCLE: usize = 6;
/// The most poll cycles a second the serial ring is sized for per battery:
/// every request is followed by 50 ms of quiet, so a cycle of two takes at
/// least 0.1 s whatever POLL-INTERVAL says.
const MAX_CYCLES_PER_SECOND: usize = 10;
/// Frames copied out of the ring per lock while dumping.
const CHUNK: u64 = 256;
/// Serial entries copied out of their ring per lock (256 bytes each).
const SERIAL_CHUNK: u64 = 64;
/// Dump requests waiting for the dump thread; more are dropped (logged):
/// the dumps already waiting cover the same window.
const REQUESTS: usize = 8;
/// How long `bms-gateway record` (through the status server) waits for its file.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// Disk errors are logged at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// Why a recording was made; the last part of its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Degraded,
    Safe,
    /// SIGUSR1.
    Signal,
    /// `bms-gateway record` (POST /api/record).
    Request,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Degraded => "degraded",
            Reason::Safe => "safe",
            Reason::Signal => "signal",
            Reason::Request => "request",
        }
    }

    /// The reason to record on entering `state`, if it is one.
    pub fn entering(state: SystemState) -> Option<Reason> {
        match state {
            SystemState::Ok => None,
            SystemState::Degraded => Some(Reason::Degraded),
            SystemState::Safe => Some(Reason::Safe),
        }
    }
}

/// A recording written: where, and how many frames it holds (CAN frames
/// and serial entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    pub frames: usize,
}

type Reply = Sender<Result<Written, String>>;

struct Request {
    reason: Reason,
    /// The end of the recorded window, Unix microseconds.
    at: u64,
    reply: Option<Reply>,
}

struct Inner {
    ring: Mutex<Ring>,
    /// The configured interfaces; an entry's `interface` indexes this.
    names: Vec<String>,
    serial: Mutex<Ring<SerialEntry>>,
    /// The configured serial ports; a serial entry's `port` indexes this.
    ports: Vec<String>,
    seconds: u32,
    keep: usize,
    dir: PathBuf,
    requests_tx: Sender<Request>,
    requests_rx: Receiver<Request>,
}

/// The recorder shared by the CAN threads, the signal handling, the
/// combiner and the status server; cheap to clone. `Default` is off.
#[derive(Clone, Default)]
pub struct Recorder {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => write!(f, "Recorder(off)"),
            Some(i) => write!(
                f,
                "Recorder({} s, {} frames, {})",
                i.seconds,
                capacity_of(i),
                i.dir.display()
            ),
        }
    }
}

fn capacity_of(inner: &Inner) -> usize {
    lock(&inner.ring).capacity()
}

fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

impl Recorder {
    /// How many frames the ring holds for `config`: SECONDS times the
    /// expected rate of its interfaces ([`INPUT_RATE`], [`OUTPUT_RATE`]).
    pub fn capacity(config: &Config) -> usize {
        let can_inputs = config.inputs.iter().filter(|i| i.serial.is_none()).count();
        let rate = can_inputs * INPUT_RATE + config.outputs.len() * OUTPUT_RATE;
        config.recorder.seconds as usize * rate
    }

    /// How many serial entries the serial ring holds for `config`: SECONDS
    /// times [`SERIAL_PER_CYCLE`] per poll cycle of each RS485 battery.
    pub fn serial_capacity(config: &Config) -> usize {
        let rate: usize = config
            .inputs
            .iter()
            .filter(|i| i.serial.is_some())
            .map(|i| {
                let interval = i.poll_interval.unwrap_or(InputConfig::SERIAL_POLL_INTERVAL);
                let cycles = (1.0 / interval.as_secs_f64()).ceil() as usize;
                SERIAL_PER_CYCLE * cycles.clamp(1, MAX_CYCLES_PER_SECOND)
            })
            .sum();
        config.recorder.seconds as usize * rate
    }

    /// The recorder for `config`, writing to `state_dir/recordings`; off
    /// when SECONDS is 0 or there is no state directory.
    pub fn new(config: &Config, state_dir: Option<&Path>) -> Recorder {
        let (Some(dir), true) = (state_dir, config.recorder.seconds > 0) else {
            return Recorder::default();
        };
        let (requests_tx, requests_rx) = bounded(REQUESTS);
        let capacity = Recorder::capacity(config);
        let serial_capacity = Recorder::serial_capacity(config);
        log::info!(
            "flight recorder: the last {} s, up to {capacity} frames and {serial_capacity} serial entries ({} KiB) in memory; recordings go to {}",
            config.recorder.seconds,
            (capacity * std::mem::size_of::<Entry>() + serial_capacity * std::mem::size_of::<SerialEntry>()) / 1024,
            dir.join("recordings").display()
        );
        let mut ports: Vec<String> = Vec::new();
        for serial in config.inputs.iter().filter_map(|i| i.serial.as_ref()) {
            if !ports.contains(&serial.port) {
                ports.push(serial.port.clone());
            }
        }
        Recorder {
            inner: Some(Arc::new(Inner {
                ring: Mutex::new(Ring::new(capacity)),
                names: config.interfaces().map(str::to_owned).collect(),
                serial: Mutex::new(Ring::filled(serial_capacity, SerialEntry::EMPTY)),
                ports,
                seconds: config.recorder.seconds,
                keep: config.recorder.keep as usize,
                dir: dir.join("recordings"),
                requests_tx,
                requests_rx,
            })),
        }
    }

    /// Where recordings go, when the recorder is on.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.as_deref().map(|i| i.dir.as_path())
    }

    /// Wraps `opener` so that every port it opens records into this ring.
    pub fn opener<'a>(&self, opener: &'a dyn CanOpener) -> Recording<'a> {
        Recording {
            opener,
            recorder: self.clone(),
        }
    }

    /// Wraps `opener` so that every serial port it opens records into
    /// the serial ring.
    pub fn serial_opener<'a>(&self, opener: &'a dyn SerialOpener) -> SerialRecording<'a> {
        SerialRecording {
            opener,
            recorder: self.clone(),
        }
    }

    /// The index of serial port `path` in the recorder's list, when it records it.
    fn port_index(&self, path: &str) -> Option<u8> {
        let inner = self.inner.as_ref()?;
        let index = inner.ports.iter().position(|p| p == path)?;
        u8::try_from(index).ok()
    }

    /// Records `bytes` sent or read on serial port number `port`, stamped
    /// now, as one entry per [`serial::BYTES`]. One short lock; allocates
    /// nothing.
    /// `continues` when `bytes` go on from the entry before.
    pub fn record_serial(&self, port: u8, direction: Direction, address: Option<u8>, continues: bool, bytes: &[u8]) {
        let Some(inner) = &self.inner else { return };
        let mut ring = lock(&inner.serial);
        let micros = unix_micros(SystemTime::now());
        for (k, part) in bytes.chunks(serial::BYTES).enumerate() {
            let mut entry = SerialEntry::new(micros, port, direction, address, part);
            entry.continues = continues || k > 0;
            ring.push(entry);
        }
    }

    /// Records one frame on interface number `interface` (config order:
    /// inputs, then outputs), stamped now. One short lock; allocates nothing.
    pub fn record(&self, interface: u8, frame: &Frame) {
        let Some(inner) = &self.inner else { return };
        let mut ring = lock(&inner.ring);
        // Read under the lock, so that the ring's order is the time order.
        let micros = unix_micros(SystemTime::now());
        ring.push(Entry {
            micros,
            interface,
            frame: *frame,
        });
    }

    /// Asks for a dump of the window ending now, without waiting. Never
    /// blocks: with the request queue full the request is dropped (those
    /// waiting cover the same frames).
    pub fn trigger(&self, reason: Reason) {
        if let Some(inner) = &self.inner {
            self.send(inner, reason, None);
        }
    }

    fn send(&self, inner: &Inner, reason: Reason, reply: Option<Reply>) -> bool {
        let request = Request {
            reason,
            at: unix_micros(SystemTime::now()),
            reply,
        };
        let sent = inner.requests_tx.try_send(request).is_ok();
        if !sent {
            log::warn!(
                "flight recorder: {} dumps already waiting; this {} one is dropped",
                REQUESTS,
                reason.as_str()
            );
        }
        sent
    }

    /// Asks for a dump and waits for its file (the status server's
    /// POST /api/record). The error says why there is none.
    pub fn ask(&self, reason: Reason) -> Result<Written, String> {
        let Some(inner) = &self.inner else {
            return Err("the flight recorder is off ([recorder] SECONDS = 0, or no state directory)".into());
        };
        let (tx, rx) = bounded(1);
        if !self.send(inner, reason, Some(tx)) {
            return Err("the flight recorder is busy: several dumps are waiting; try again".into());
        }
        rx.recv_timeout(ASK_TIMEOUT).unwrap_or_else(|_| {
            Err(format!(
                "no recording within {} s (a slow disk?); it may still appear in {}",
                ASK_TIMEOUT.as_secs(),
                inner.dir.display()
            ))
        })
    }

    /// The dump thread: writes each requested recording until `stop`.
    /// Returns at once when the recorder is off.
    pub fn run(&self, events: &Events, stop: &Stop) {
        let Some(inner) = &self.inner else { return };
        // Allocated once: a dump copies into it, never into a new buffer.
        let mut buffers = Buffers {
            can: Vec::with_capacity(capacity_of(inner)),
            serial: Vec::with_capacity(lock(&inner.serial).capacity()),
            text: String::new(),
        };
        let mut errors = LogLimit::new(ERROR_LOG_EVERY, Repeats::AnyText);
        loop {
            let request = select! {
                recv(stop.receiver()) -> _ => return,
                recv(inner.requests_rx) -> r => match r {
                    Ok(r) => r,
                    Err(_) => return,
                },
            };
            let result = dump_once(inner, &request, &mut buffers);
            report(inner, &request, &result, events, &mut errors);
            if let Some(reply) = request.reply {
                let _ = reply.try_send(result);
            }
        }
    }
}

/// The dump thread's buffers, made once.
struct Buffers {
    can: Vec<Entry>,
    serial: Vec<SerialEntry>,
    text: String,
}

/// Copies `ring` into `out`, `chunk` entries per lock.
fn copy_ring<T: Copy>(ring: &Mutex<Ring<T>>, chunk: u64, out: &mut Vec<T>) {
    out.clear();
    let span = lock(ring).span();
    let mut from = span.start;
    while from < span.end {
        let to = (from + chunk).min(span.end);
        lock(ring).copy(from..to, out);
        from = to;
    }
}

/// Copies the rings chunk by chunk, keeps the window, writes the file and
/// prunes to KEEP.
fn dump_once(inner: &Inner, request: &Request, buffers: &mut Buffers) -> Result<Written, String> {
    let Buffers { can, serial, text } = buffers;
    text.clear();
    copy_ring(&inner.ring, CHUNK, can);
    copy_ring(&inner.serial, SERIAL_CHUNK, serial);
    let frames = dump::render_all(
        ring::window(can, request.at, inner.seconds).copied(),
        ring::window(serial, request.at, inner.seconds).copied(),
        (&inner.names, &inner.ports),
        text,
    );
    let name = dump::file_name(request.at / 1_000_000, request.reason.as_str());
    let path = dump::write(&inner.dir, &name, text)
        .map_err(|e| format!("flight recording {name} not written to {}: {e}", inner.dir.display()))?;
    if let Err(e) = dump::prune(&inner.dir, inner.keep) {
        log::warn!(
            "flight recorder: cannot remove old recordings in {} (KEEP = {}): {e}",
            inner.dir.display(),
            inner.keep
        );
    }
    Ok(Written { path, frames })
}

fn report(inner: &Inner, request: &Request, result: &Result<Written, String>, events: &Events, errors: &mut LogLimit) {
    match result {
        Ok(w) => {
            let message = format!(
                "flight recording written ({}): {} ({} frames, the last {} s)",
                request.reason.as_str(),
                w.path.display(),
                w.frames,
                inner.seconds
            );
            log::info!("{message}");
            events.emit(Kind::RecordingWritten, Subject::System, message);
        }
        Err(why) => {
            // A full or read-only disk fails every dump: said once a minute.
            if let Some(line) = errors.check(why, Instant::now()) {
                log::error!("{line}");
                events.emit(Kind::RecordingFailed, Subject::System, line);
            }
        }
    }
}

/// A [`CanOpener`] whose ports record every frame read and written.
pub struct Recording<'a> {
    opener: &'a dyn CanOpener,
    recorder: Recorder,
}

impl CanOpener for Recording<'_> {
    fn open(&self, interface: &str) -> Result<Box<dyn CanPort>, CanError> {
        let port = self.opener.open(interface)?;
        let index = self.recorder.inner.as_ref().and_then(|inner| {
            let index = inner.names.iter().position(|n| n == interface)?;
            u8::try_from(index).ok()
        });
        Ok(match index {
            Some(index) => Box::new(RecordingPort {
                port,
                recorder: self.recorder.clone(),
                index,
            }),
            None => port,
        })
    }

    fn bounce(&self, interface: &str) -> Result<crate::can::Bounced, crate::can::BounceError> {
        self.opener.bounce(interface)
    }
}

struct RecordingPort {
    port: Box<dyn CanPort>,
    recorder: Recorder,
    index: u8,
}

impl CanPort for RecordingPort {
    fn read(&mut self, timeout: Duration) -> Result<Option<Frame>, CanError> {
        let read = self.port.read(timeout);
        if let Ok(Some(frame)) = &read {
            self.recorder.record(self.index, frame);
        }
        read
    }

    fn read_until(&mut self, deadline: Instant, stop: &Stop) -> Result<Wake, CanError> {
        let woke = self.port.read_until(deadline, stop);
        if let Ok(Wake::Frame(frame)) = &woke {
            self.recorder.record(self.index, frame);
        }
        woke
    }

    fn read_until_from(&mut self, now: Instant, deadline: Instant, stop: &Stop) -> Result<Wake, CanError> {
        let woke = self.port.read_until_from(now, deadline, stop);
        if let Ok(Wake::Frame(frame)) = &woke {
            self.recorder.record(self.index, frame);
        }
        woke
    }

    fn write(&mut self, frame: &Frame) -> Result<(), CanError> {
        let written = self.port.write(frame);
        if written.is_ok() {
            self.recorder.record(self.index, frame);
        }
        written
    }

    fn link(&self) -> LinkState {
        self.port.link()
    }
}

#[cfg(test)]
mod tests;
