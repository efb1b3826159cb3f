//! One RS485 battery's thread (spec 18): polls its pack on a serial port,
//! one poll cycle at a time (0x42 and 0x92 every cycle, 0x44 at least every
//! 10 s, the static 0x51/0x93/0x96/0x47 at start and hourly), makes each
//! complete cycle into a telegram with the codec's mapping and hands it to
//! the combiner over the same channel and [`Delivery`] as a CAN input, so
//! staleness and every bank rule apply unchanged.
//!
//! The packs of one port share its wire: the port is a [`Bus`], held by one
//! pack's whole cycle at a time, so a shared port sees one transaction at a
//! time, a quiet gap between two, and never two cycles interleaved. A
//! failed port is dropped and reopened by path with back-off. Every bad
//! answer is counted by kind ([`SerialFaults`]) and logged rate-limited,
//! never used. The design is in docs/rs485.md, "The serial thread".

use crate::can::{LinkState, backoff, report_link};
use crate::config::{InputConfig, SerialInput};
use crate::context::ThreadContext;
use crate::events::Subject;
use crate::input::Delivery;
use crate::loglimit::{LogLimit, Repeats};
use crate::rs485::mapping::Cycle;
use crate::rs485::responses::{
    self, ChargeManagement, decode_alarms, decode_analog, decode_charge_management_of, decode_manufacturer_info,
    decode_serial_number, decode_software_version, decode_system_parameters,
};
use crate::rs485::{Command, Receiver, ReplyError, Request, check_reply};
use crate::serial::{LineSettings, SerialError, SerialOpener, SerialPort};
pub use crate::serial::{SerialFault, SerialFaults};
use crate::status::{InputStatus, Slot};
use crossbeam_channel::{Sender, TrySendError};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

/// How long a request waits for its answer: the reference's 500 ms plus
/// the answer's time on the wire, with its floor of 1 s (§2.4). At 9600
/// baud the longest answer polled (0x42 of 32 cells, about 260
/// characters) takes 0.27 s, so the floor rules at every allowed speed.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// Bus silence between the end of one transaction and the next request,
/// whichever pack either was for (the reference's "at least 50 ms", §2.4).
pub const INTER_FRAME_GAP: Duration = Duration::from_millis(50);

/// 0x44 at least this often (spec 18).
pub const ALARMS_EVERY: Duration = Duration::from_secs(10);

/// The static commands at start and this often (spec 18).
pub const STATICS_EVERY: Duration = Duration::from_secs(3600);

/// The static commands, read for the log only.
const STATICS: [Command; 4] = [
    Command::ManufacturerInfo,
    Command::SerialNumber,
    Command::SoftwareVersion,
    Command::SystemParameters,
];

/// The ports in use, by path, so that the packs of one port share it.
#[derive(Default)]
pub struct SerialBuses {
    ports: Mutex<HashMap<String, Weak<Bus>>>,
}

impl SerialBuses {
    /// The bus of `path`, shared with every other pack on it.
    pub fn bus(&self, path: &str, line: LineSettings) -> Arc<Bus> {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        ports.retain(|_, bus| bus.strong_count() > 0);
        if let Some(bus) = ports.get(path).and_then(Weak::upgrade) {
            return bus;
        }
        let bus = Arc::new(Bus {
            path: path.to_string(),
            line,
            state: Mutex::default(),
            turns: Mutex::default(),
            turn_over: Condvar::new(),
        });
        ports.insert(path.to_string(), Arc::downgrade(&bus));
        bus
    }
}

/// One serial port and who may use it now.
pub struct Bus {
    path: String,
    line: LineSettings,
    state: Mutex<BusState>,
    /// Whose turn the port is (see [`Turns`]).
    turns: Mutex<Turns>,
    turn_over: Condvar,
}

/// Tickets for the port, served in the order taken, so the packs of one
/// port take turns. The state's plain mutex is not enough: the pack that
/// just released it may take it again at once, and a pack whose cycles
/// fill its POLL-INTERVAL would starve the others (seen on the in-process
/// pair with two packs at 100 ms).
#[derive(Default)]
struct Turns {
    taken: u64,
    serving: u64,
}

/// A pack's turn on the port; the next ticket's when dropped.
struct Turn<'a> {
    bus: &'a Bus,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        crate::sync::lock(&self.bus.turns).serving += 1;
        self.bus.turn_over.notify_all();
    }
}

/// The port's state, behind the bus's lock.
#[derive(Default)]
struct BusState {
    port: Option<Box<dyn SerialPort>>,
    /// Failed opens (or failures) in a row, for the back-off.
    failures: u32,
    /// No reopening before this.
    retry_at: Option<Instant>,
    /// Why it is not open.
    down: Option<String>,
    /// When the last transaction ended (its answer, or its timeout).
    quiet_since: Option<Instant>,
}

impl Bus {
    fn lock(&self) -> MutexGuard<'_, BusState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for this caller's turn (at most the cycles of the packs ahead,
    /// each bounded by its transactions' deadlines).
    fn take_turn(&self) -> Turn<'_> {
        let mut turns = crate::sync::lock(&self.turns);
        let mine = turns.taken;
        turns.taken += 1;
        while turns.serving != mine {
            turns = self.turn_over.wait(turns).unwrap_or_else(|e| e.into_inner());
        }
        Turn { bus: self }
    }
}

impl BusState {
    /// Opens the port if it is closed and it is time to; why not when it stays closed.
    fn open(&mut self, bus: &Bus, opener: &dyn SerialOpener, now: Instant) -> Result<(), String> {
        if self.port.is_none() {
            if self.retry_at.is_some_and(|at| now < at) {
                return Err(self.down.clone().unwrap_or_default());
            }
            match opener.open(&bus.path, bus.line) {
                Ok(port) => {
                    self.port = Some(port);
                    self.failures = 0;
                    self.down = None;
                }
                Err(e) => self.failed(format!("port unavailable ({e})"), now),
            }
        }
        match self.port {
            Some(_) => Ok(()),
            None => Err(self.down.clone().unwrap_or_default()),
        }
    }

    /// The port failed: closed now, reopened after the back-off.
    fn failed(&mut self, why: String, now: Instant) {
        self.port = None;
        self.retry_at = Some(now + backoff(self.failures));
        self.failures = self.failures.saturating_add(1);
        self.down = Some(why);
    }
}

/// Why a transaction gave nothing.
#[derive(Debug)]
enum Failure {
    /// A bad or missing answer: counted, the cycle is lost.
    Answer(SerialFault, String),
    /// The port failed: it is reopened.
    Port(SerialError),
    Stopped,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Answer(_, why) => f.write_str(why),
            Failure::Port(e) => write!(f, "port failed ({e})"),
            Failure::Stopped => f.write_str("stopped"),
        }
    }
}

/// When each kind of request is next due.
struct Schedule {
    next_cycle: Instant,
    alarms_due: Instant,
    statics_due: Instant,
}

/// Everything one RS485 battery's thread needs.
pub struct SerialPack<'a> {
    pub config: &'a InputConfig,
    pub opener: &'a dyn SerialOpener,
    /// Its port, shared with the other packs on it.
    pub bus: &'a Bus,
    pub telegrams: &'a Sender<Delivery>,
    pub slot: &'a Slot<InputStatus>,
    /// Events, stop, heartbeats.
    pub context: ThreadContext<'a>,
}

/// The thread's own state across cycles.
struct Poller {
    receiver: Receiver,
    /// Counted since the last flush to the board.
    faults: SerialFaults,
    frames: u64,
    bad_answers: LogLimit,
    /// The bytes' buffer, made once.
    buf: [u8; 256],
    /// The last good answer's INFO, room for the longest made once.
    info: Vec<u8>,
}

impl SerialPack<'_> {
    fn serial(&self) -> &SerialInput {
        self.config
            .serial
            .as_ref()
            .expect("a serial pack's thread runs only for a SERIAL-PORT input")
    }

    fn label(&self) -> String {
        format!("battery {} ({})", self.slot.position() + 1, self.config.can_if)
    }

    fn link(&self, link: LinkState) {
        let old = self.slot.update(|s| std::mem::replace(&mut s.link, link.clone()));
        report_link(
            self.context.events,
            Subject::Battery(self.slot.position()),
            || self.label(),
            &old,
            &link,
        );
    }

    /// Runs until stopped.
    pub fn run(&self) {
        let interval = self.config.poll_interval.unwrap_or(InputConfig::SERIAL_POLL_INTERVAL);
        let start = Instant::now();
        let mut schedule = Schedule {
            next_cycle: start,
            alarms_due: start,
            statics_due: start,
        };
        let mut poller = Poller {
            receiver: Receiver::new(),
            faults: SerialFaults::default(),
            frames: 0,
            bad_answers: LogLimit::new(Duration::from_secs(10), Repeats::AnyText),
            buf: [0; 256],
            info: Vec::with_capacity(crate::rs485::framing::MAX_INFO),
        };
        let mut first = true;
        while !self.context.wait_until(schedule.next_cycle) {
            (self.context.heartbeat)();
            let now = Instant::now();
            // A late cycle is not made up for: the next one is a period on.
            schedule.next_cycle = (schedule.next_cycle + interval).max(now);
            let outcome = self.cycle(&mut poller, &mut schedule);
            if std::mem::take(&mut first) {
                (self.context.opened)();
            }
            match outcome {
                Err(Failure::Stopped) => return,
                Err(Failure::Answer(kind, why)) => self.bad_answer(&mut poller, kind, &why),
                Err(Failure::Port(_)) | Ok(()) => {}
            }
            self.flush(&mut poller, None);
        }
    }

    /// One cycle under the bus's lock: the port opened if needed, the
    /// cycle's requests in turn, the telegram delivered.
    fn cycle(&self, poller: &mut Poller, schedule: &mut Schedule) -> Result<(), Failure> {
        let bus = self.bus;
        let _turn = bus.take_turn();
        let mut state = bus.lock();
        let now = Instant::now();
        if let Err(why) = state.open(bus, self.opener, now) {
            self.link(LinkState::Down(why));
            return Ok(());
        }
        self.link(LinkState::Up);
        let BusState { port, quiet_since, .. } = &mut *state;
        let port = port.as_deref_mut().expect("opened just now");
        let result = self.poll(port, quiet_since, poller, schedule);
        if let Err(Failure::Port(e)) = &result {
            let why = format!("port failed ({e})");
            state.failed(why.clone(), Instant::now());
            self.link(LinkState::Down(why));
        }
        result
    }

    fn poll(
        &self,
        port: &mut dyn SerialPort,
        quiet_since: &mut Option<Instant>,
        poller: &mut Poller,
        schedule: &mut Schedule,
    ) -> Result<(), Failure> {
        let protocol = self.serial().protocol;
        self.transact(port, quiet_since, poller, Command::AnalogValues)?;
        let analog = decode_analog(&poller.info, protocol).map_err(undecodable)?.pack;
        self.transact(port, quiet_since, poller, Command::ChargeManagement)
            .map_err(without_limits)?;
        let address = self.serial().address;
        let management: ChargeManagement = decode_charge_management_of(&poller.info, address).map_err(undecodable)?;
        let now = Instant::now();
        let alarms = if now >= schedule.alarms_due {
            self.transact(port, quiet_since, poller, Command::AlarmInfo)?;
            let alarms = decode_alarms(&poller.info, protocol).map_err(undecodable)?;
            schedule.alarms_due = now + ALARMS_EVERY;
            Some(alarms)
        } else {
            None
        };
        let cycle = Cycle {
            analog,
            management,
            alarms,
        };
        match cycle.telegram() {
            Ok(telegram) => self.deliver(poller, telegram, Instant::now()),
            Err(e) => {
                return Err(Failure::Answer(
                    SerialFault::Implausible,
                    format!("cycle not used: {e}"),
                ));
            }
        }
        if now >= schedule.statics_due {
            schedule.statics_due = now + STATICS_EVERY;
            self.read_statics(port, quiet_since, poller)?;
        }
        Ok(())
    }

    /// The static commands, logged; a pack that does not know one (Seplos
    /// and PACE lack 0x93 and 0x96) is no fault of the link.
    fn read_statics(
        &self,
        port: &mut dyn SerialPort,
        quiet_since: &mut Option<Instant>,
        poller: &mut Poller,
    ) -> Result<(), Failure> {
        let protocol = self.serial().protocol;
        let mut found = Vec::new();
        for command in STATICS {
            match self.transact(port, quiet_since, poller, command) {
                Ok(()) => {}
                Err(Failure::Answer(SerialFault::Refused, _)) => continue,
                Err(Failure::Answer(kind, why)) => {
                    self.bad_answer(poller, kind, &why);
                    continue;
                }
                Err(other) => return Err(other),
            }
            let info = &poller.info;
            let text = match command {
                Command::ManufacturerInfo => decode_manufacturer_info(info)
                    .map(|m| format!("{} by {}", m.name().trim(), m.manufacturer().trim())),
                Command::SerialNumber => decode_serial_number(info).map(|s| format!("serial {}", s.text().trim())),
                Command::SoftwareVersion => decode_software_version(info)
                    .map(|v| format!("software {:02X?} {:02X?}", v.manufacturer, v.main_line)),
                _ => decode_system_parameters(info, protocol).map(|p| {
                    format!(
                        "protection: cells {}..{} V, module {}..{} V",
                        p.cell_under, p.cell_high, p.module_under, p.module_high
                    )
                }),
            };
            match text {
                Ok(text) => found.push(text),
                Err(e) => self.bad_answer(poller, SerialFault::Undecodable, &e.to_string()),
            }
        }
        if !found.is_empty() {
            log::info!("{}: {}", self.label(), found.join(", "));
        }
        Ok(())
    }

    /// One request; its answer's INFO is left in `poller.info`.
    fn transact(
        &self,
        port: &mut dyn SerialPort,
        quiet_since: &mut Option<Instant>,
        poller: &mut Poller,
        command: Command,
    ) -> Result<(), Failure> {
        let serial = self.serial();
        if let Some(quiet) = *quiet_since
            && self.context.wait_until(quiet + INTER_FRAME_GAP)
        {
            return Err(Failure::Stopped);
        }
        // Nothing from before this request may be taken for its answer.
        port.discard_input().map_err(Failure::Port)?;
        if let Some(r) = poller.receiver.abandon() {
            poller.faults.add(SerialFault::of_rejection(r));
        }
        let request = Request::new(serial.protocol.version(), serial.address, command);
        port.write_all(request.encode().as_bytes()).map_err(Failure::Port)?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let result = self.answer(port, poller, serial.address, command, deadline);
        *quiet_since = Some(Instant::now());
        result
    }

    /// Reads until the answer to `command` from `address`, a bad one, or the deadline.
    fn answer(
        &self,
        port: &mut dyn SerialPort,
        poller: &mut Poller,
        address: u8,
        command: Command,
        deadline: Instant,
    ) -> Result<(), Failure> {
        let code = command.code();
        // Bytes received since the last frame or rejection: noise that
        // never made a frame (the receiver only reports it at a `~`).
        let mut unframed = false;
        loop {
            let now = Instant::now();
            if now >= deadline {
                let partial = poller.receiver.abandon().is_some();
                let kind = match (partial, unframed) {
                    (true, _) => SerialFault::Partial,
                    (false, true) => SerialFault::Garbage,
                    (false, false) => SerialFault::Timeout,
                };
                return Err(Failure::Answer(
                    kind,
                    format!("no answer to 0x{code:02X} within {REPLY_TIMEOUT:?}"),
                ));
            }
            (self.context.heartbeat)();
            if self.context.stop.requested() {
                return Err(Failure::Stopped);
            }
            // The port's wait does not see the stop: wait in slices.
            let slice = self.context.heartbeat_every.min(crate::shutdown::FALLBACK_SLICE);
            let n = port
                .read_until(&mut poller.buf, deadline.min(now + slice))
                .map_err(Failure::Port)?;
            for k in 0..n {
                let byte = poller.buf[k];
                unframed = true;
                let pushed = poller.receiver.push(byte);
                unframed &= pushed.is_none();
                let frame = match pushed {
                    None => continue,
                    Some(Err(r)) => {
                        let kind = SerialFault::of_rejection(r);
                        if kind == SerialFault::Garbage {
                            // Noise before a frame: its answer may follow.
                            poller.faults.add(kind);
                            continue;
                        }
                        return Err(Failure::Answer(kind, format!("answer to 0x{code:02X}: {}", r.name())));
                    }
                    Some(Ok(frame)) => frame,
                };
                poller.frames += 1;
                match check_reply(&frame, address) {
                    Ok(info) => {
                        // Into the buffer made at start: no allocation per answer.
                        poller.info.clear();
                        poller.info.extend_from_slice(info);
                        return Ok(());
                    }
                    // An echo or another pack's answer: ours may still come.
                    Err(e @ (ReplyError::Echo(_) | ReplyError::WrongAddress { .. } | ReplyError::WrongDevice(_))) => {
                        poller.faults.add(SerialFault::of_reply(&e));
                    }
                    Err(e) => {
                        return Err(Failure::Answer(
                            SerialFault::of_reply(&e),
                            format!("answer to 0x{code:02X}: {e}"),
                        ));
                    }
                }
            }
        }
    }

    fn bad_answer(&self, poller: &mut Poller, kind: SerialFault, why: &str) {
        poller.faults.add(kind);
        let line = format_args!("{}: answer not used ({}): {why}", self.label(), kind.name());
        if let Some(line) = poller.bad_answers.check(line, Instant::now()) {
            log::warn!("{line}");
        }
    }

    fn deliver(&self, poller: &mut Poller, telegram: crate::telegram::Telegram, now: Instant) {
        let delivery = Delivery {
            input: self.slot.id,
            telegram,
            at: now,
        };
        let dropped = matches!(self.telegrams.try_send(delivery), Err(TrySendError::Full(_)));
        self.flush(poller, Some((telegram, now, dropped)));
    }

    fn flush(&self, poller: &mut Poller, telegram: Option<(crate::telegram::Telegram, Instant, bool)>) {
        let (frames, faults) = (std::mem::take(&mut poller.frames), std::mem::take(&mut poller.faults));
        self.slot.update(|s| {
            s.frames += frames;
            s.invalid += faults.total();
            s.serial_faults.add_all(&faults);
            if let Some((t, at, dropped)) = telegram {
                s.telegram = Some(t);
                s.last_telegram = Some(at);
                s.last_telegram_wall = Some(SystemTime::now());
                s.telegrams += 1;
                s.dropped += u64::from(dropped);
            }
        });
    }
}

/// A pack that does not answer 0x92 (Seplos V2 and PACE do not list it)
/// gives no limits, and spec 18 takes them from 0x92 only (0x47's are
/// protection thresholds, reference §3.5): said so in the log, as the
/// reason the pack stays stale.
fn without_limits(failure: Failure) -> Failure {
    match failure {
        Failure::Answer(kind @ (SerialFault::Refused | SerialFault::Timeout), why) => Failure::Answer(
            kind,
            format!("{why}; without 0x92 the pack's charge limits are unknown: its cycle is not used"),
        ),
        other => other,
    }
}

fn undecodable(e: responses::ReplyError) -> Failure {
    Failure::Answer(SerialFault::Undecodable, e.to_string())
}

#[cfg(test)]
mod tests;
