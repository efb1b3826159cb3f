//! `bms-gateway replay`: runs candump logs through the gateway's own core in
//! virtual time and prints what each inverter would have been sent, when.
//!
//! The same functions as the daemon, driven by the log's timestamps instead
//! of a clock: telegram assembly per input ([`Assembler`]), the [`Combiner`]
//! woken at its own next deadline as the daemon's combiner thread is, and
//! each inverter's shaping, the
//! output's fail-safe on old states, SOC window, CVL ramp and frame encoding
//! for its profile ([`transmission`]), push timing ([`PushTimer`]) or sync
//! answers.
//! No threads, no sleeps: the same files give the same bytes.
//!
//! Time is kept in whole microseconds from the first frame (candump's own
//! resolution), so no floating-point sum can make two runs differ. Events at
//! one instant run in the daemon's order: the frame, then the combiner's
//! tick, then the outputs.
//!
//! Bad input loses nothing else: a line that is not a frame, has no
//! timestamp or interface, goes back in time, or names an interface the
//! configuration does not have is reported with its file and line number,
//! and replay goes on.

use crate::candump::{self, LineError};
use crate::codec::{self, Message};
use crate::combine::{Combined, Combiner, InverterShare, Shaped};
use crate::config::{Config, OutputMode};
use crate::decode::frame_json;
use crate::frame::Frame;
use crate::interlock::Interlock;
use crate::output::{checked_transmission, min_delay, view_of};
use crate::profile::OutputView;
use crate::send::PushTimer;
use crate::setpoint::{LimitKind, Scope, Setpoint, SetpointCommand};
use crate::telegram::Assembler;
use serde_json::{Value, json};
use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant};

/// How the transmissions are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// candump -l lines with the output interfaces' names.
    Candump,
    /// One JSON object per transmission: the frames decoded and the combined state.
    Json,
}

/// When the transmissions are printed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// `--virtual` (the default): all at once, as fast as the core runs;
    /// the printed times are the log's.
    Virtual,
    /// `--speed N`: each transmission printed (and flushed) when it is due at
    /// N times the log's own pace (1 = as it happened). Only when lines
    /// appear changes; what is printed is the same as with `Virtual`.
    Speed(f64),
}

/// `--setpoint T:KIND:VALUE[:TTL]`: a system-wide setpoint set T s after the
/// log's first frame, for TTL s (until the end without one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SetpointAt {
    pub at: Duration,
    pub kind: LimitKind,
    pub value: f64,
    pub ttl: Option<Duration>,
}

impl std::str::FromStr for SetpointAt {
    type Err = String;

    fn from_str(s: &str) -> Result<SetpointAt, String> {
        let usage = || format!("{s:?}: expected T:KIND:VALUE[:TTL], e.g. 10:charge:50 or 10:discharge:0:30");
        let parts: Vec<&str> = s.split(':').collect();
        let (t, kind, value, ttl) = match parts[..] {
            [t, k, v] => (t, k, v, None),
            [t, k, v, ttl] => (t, k, v, Some(ttl)),
            _ => return Err(usage()),
        };
        let secs = |x: &str| {
            x.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e9)
                .map(Duration::from_secs_f64)
        };
        let kind = match kind {
            "charge" => LimitKind::Charge,
            "discharge" => LimitKind::Discharge,
            _ => return Err(format!("{}: KIND is charge or discharge", usage())),
        };
        Ok(SetpointAt {
            at: secs(t).ok_or_else(usage)?,
            kind,
            value: value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(usage)?,
            ttl: match ttl {
                None => None,
                Some(x) => Some(secs(x).filter(|d| !d.is_zero()).ok_or_else(usage)?),
            },
        })
    }
}

/// One input file: a name for messages and its bytes.
pub struct Source<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
}

/// Why a line was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    NotText,
    NotAFrame,
    NoTimestamp,
    NoInterface,
    BackInTime,
    UnknownInterface,
    /// A long silence of the whole log: replayed shortened (the line is used).
    Gap,
}

impl Problem {
    fn label(self) -> &'static str {
        match self {
            Problem::NotText => "not text",
            Problem::NotAFrame => "not a frame",
            Problem::NoTimestamp => "no timestamp",
            Problem::NoInterface => "no interface",
            Problem::BackInTime => "out of order",
            Problem::UnknownInterface => "unknown interface",
            Problem::Gap => "gap",
        }
    }
}

/// A line that was not used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    pub file: String,
    pub line: usize,
    pub problem: Problem,
    pub detail: String,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file,
            self.line,
            self.problem.label(),
            self.detail
        )
    }
}

/// What a replay read and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub lines: usize,
    pub frames_in: usize,
    /// Frames on an input that the codec refused (counted, as the daemon does).
    pub invalid_frames: usize,
    pub transmissions: usize,
    /// Frame sets the interlock refused (the safe state was printed instead).
    pub interlock_trips: u64,
    pub problems: Vec<LineProblem>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replay: {} lines, {} frames used ({} refused by the decoder), {} transmissions, {} lines not used",
            self.lines,
            self.frames_in,
            self.invalid_frames,
            self.transmissions,
            self.problems.len()
        )?;
        if self.interlock_trips > 0 {
            write!(
                f,
                "; {} frame sets refused by the interlock (the safe state was sent instead)",
                self.interlock_trips
            )?;
        }
        let mut kinds: Vec<Problem> = self.problems.iter().map(|p| p.problem).collect();
        kinds.sort();
        kinds.dedup();
        for k in kinds {
            let n = self.problems.iter().filter(|p| p.problem == k).count();
            write!(f, "; {n} {}", k.label())?;
        }
        Ok(())
    }
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Input(usize),
    Output(usize),
}

/// One usable line.
#[derive(Debug, Clone, Copy)]
struct Event {
    /// µs since the epoch of the log.
    at_us: i64,
    port: Port,
    frame: Frame,
    /// Where it came from: index into the sources, 1-based line.
    source: usize,
    line: usize,
}

/// A silence of the whole log longer than this is replayed as this long:
/// by then every input is stale and the outputs only repeat the safe state,
/// and a log spanning days (or a garbage timestamp) must not take days.
pub const MAX_GAP: Duration = Duration::from_secs(600);

/// From virtual time `from_us` on, printed times are `add_us` later: the
/// time cut out of the gaps before it.
#[derive(Debug, Clone, Copy)]
struct Skew {
    from_us: i64,
    add_us: i64,
}

fn micros(ts: f64) -> Option<i64> {
    let us = (ts * 1e6).round();
    (us.is_finite() && us.abs() < 9e15).then_some(us as i64)
}

fn port_of(config: &Config, iface: &str) -> Option<Port> {
    if let Some(i) = config.inputs.iter().position(|c| c.can_if == iface) {
        return Some(Port::Input(i));
    }
    config.outputs.iter().position(|c| c.can_if == iface).map(Port::Output)
}

/// Reads every line of every source; usable ones become events, in time
/// order (ties keep file and line order).
fn read_events(config: &Config, sources: &[Source], summary: &mut Summary) -> (Vec<Event>, Vec<Skew>) {
    let mut events = Vec::new();
    for (index, source) in sources.iter().enumerate() {
        let mut last_us: Option<i64> = None;
        for (n, raw) in source.bytes.split(|&b| b == b'\n').enumerate() {
            summary.lines += 1;
            let mut problem = |problem, detail: String| {
                summary.problems.push(LineProblem {
                    file: source.name.to_string(),
                    line: n + 1,
                    problem,
                    detail,
                })
            };
            let Ok(text) = std::str::from_utf8(raw) else {
                problem(Problem::NotText, "bytes that are not UTF-8 text".into());
                continue;
            };
            let record = match candump::parse_line(text) {
                Ok(r) => r,
                Err(LineError::Empty) => continue,
                Err(LineError::Invalid(why)) => {
                    problem(Problem::NotAFrame, why);
                    continue;
                }
            };
            let Some(at_us) = record.ts.and_then(micros) else {
                problem(
                    Problem::NoTimestamp,
                    "replay needs candump -l lines with a (timestamp)".into(),
                );
                continue;
            };
            let Some(iface) = record.iface else {
                problem(
                    Problem::NoInterface,
                    "replay needs the interface name on each line".into(),
                );
                continue;
            };
            if let Some(last) = last_us.filter(|&l| at_us < l) {
                problem(
                    Problem::BackInTime,
                    format!("{:.6} s before the line above it: skipped", (last - at_us) as f64 / 1e6),
                );
                continue;
            }
            let Some(port) = port_of(config, &iface) else {
                problem(
                    Problem::UnknownInterface,
                    format!("{iface:?} is neither a [[bmses-in]] nor a [[bmses-out]] CAN-IF"),
                );
                continue;
            };
            last_us = Some(at_us);
            events.push(Event {
                at_us,
                port,
                frame: record.frame,
                source: index,
                line: n + 1,
            });
        }
    }
    events.sort_by_key(|e| e.at_us);
    let skews = shorten_gaps(&mut events, sources, summary);
    (events, skews)
}

/// Cuts every silence longer than [`MAX_GAP`] down to it, reporting each.
fn shorten_gaps(events: &mut [Event], sources: &[Source], summary: &mut Summary) -> Vec<Skew> {
    let max = MAX_GAP.as_micros() as i64;
    let mut skews = Vec::new();
    let mut cut = 0i64;
    let mut previous: Option<i64> = None;
    for e in events.iter_mut() {
        let original = e.at_us;
        if let Some(p) = previous.filter(|&p| original - p > max) {
            let gap = original - p;
            cut += gap - max;
            summary.problems.push(LineProblem {
                file: sources[e.source].name.to_string(),
                line: e.line,
                problem: Problem::Gap,
                detail: format!(
                    "{:.3} s without any frame before this line: replayed as {} s",
                    gap as f64 / 1e6,
                    MAX_GAP.as_secs()
                ),
            });
            skews.push(Skew {
                from_us: original - cut,
                add_us: cut,
            });
        }
        previous = Some(original);
        e.at_us = original - cut;
    }
    skews
}

/// One output's side of the replay.
struct OutputState {
    latest: Option<Shaped>,
    timer: PushTimer,
    /// Sync mode: when our own 0x305 is due.
    next_own: Option<Instant>,
    /// Sync mode: a 0x305 from the inverter waits for an answer.
    asked: bool,
    /// Sync mode: the last answer, for the profile's pacing.
    last_answer: Option<Instant>,
    /// The output's SOC window and CVL ramp.
    view: OutputView,
    /// Its interlock (spec 14).
    interlock: Interlock,
}

/// Prints transmissions in the chosen format.
struct Printer<'w> {
    out: &'w mut dyn Write,
    format: Format,
    epoch_us: i64,
    base: Instant,
    skews: Vec<Skew>,
    /// `--speed`: the factor and the wall-clock moment the log's first frame
    /// stands for.
    paced: Option<(f64, Instant)>,
}

impl Printer<'_> {
    /// With `--speed`, waits until the transmission at virtual `now` is due.
    fn wait_until_due(&mut self, now: Instant) -> io::Result<()> {
        let Some((speed, started)) = self.paced else {
            return Ok(());
        };
        let due = started + now.duration_since(self.base).div_f64(speed);
        let wait = due.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            // Lines printed so far are shown before the pause.
            self.out.flush()?;
            std::thread::sleep(wait);
        }
        Ok(())
    }

    fn stamp(&self, now: Instant) -> String {
        let virtual_us = now.duration_since(self.base).as_micros() as i64;
        let skew = self
            .skews
            .iter()
            .rev()
            .find(|s| s.from_us - self.epoch_us <= virtual_us)
            .map_or(0, |s| s.add_us);
        let us = self.epoch_us + virtual_us + skew;
        let sign = if us < 0 { "-" } else { "" };
        format!(
            "{sign}{}.{:06}",
            us.unsigned_abs() / 1_000_000,
            us.unsigned_abs() % 1_000_000
        )
    }

    fn frames(&mut self, iface: &str, now: Instant, frames: &[Frame], about: Value) -> io::Result<()> {
        self.wait_until_due(now)?;
        let stamp = self.stamp(now);
        match self.format {
            Format::Candump => {
                for f in frames {
                    writeln!(self.out, "({stamp}) {iface} {}", candump::compact(f))?;
                }
            }
            Format::Json => {
                let mut v = about;
                v["ts"] = json!(stamp);
                v["iface"] = json!(iface);
                v["frames"] = frames
                    .iter()
                    .map(|f| Value::Object(frame_json(f, None, None)))
                    .collect();
                writeln!(self.out, "{v}")?;
            }
        }
        Ok(())
    }
}

/// The whole replay machine.
struct Machine<'c, 'w> {
    config: &'c Config,
    assemblers: Vec<Assembler>,
    combiner: Combiner,
    outputs: Vec<OutputState>,
    printer: Printer<'w>,
    transmissions: usize,
    /// The latest combined state, for the JSON output.
    last: Option<Combined>,
}

impl Machine<'_, '_> {
    fn distribute(&mut self, made: Option<Combined>, now: Instant) {
        if made.is_none() {
            return;
        }
        self.last = made;
        for (out, shaped) in self.outputs.iter_mut().zip(self.combiner.shaped(now)) {
            out.latest = Some(shaped);
            out.timer.pending = true;
        }
    }

    fn on_frame(&mut self, e: &Event, now: Instant, summary: &mut Summary) {
        summary.frames_in += 1;
        match e.port {
            Port::Input(i) => match codec::decode(&e.frame) {
                Ok(m) => {
                    if let Some(t) = self.assemblers[i].push(&m, now) {
                        let made = self.combiner.on_telegram(i, t, now);
                        self.distribute(made, now);
                    }
                }
                Err(_) => summary.invalid_frames += 1,
            },
            // An inverter's 0x305 asks a sync-mode output for the frames;
            // anything else on an output (say, the daemon's own frames in a
            // recording) changes nothing.
            Port::Output(j) => {
                if matches!(codec::decode(&e.frame), Ok(Message::KeepAlive)) {
                    self.outputs[j].asked = true;
                }
            }
        }
    }

    /// Bursts that ended by their quiet gap complete their telegrams, as the
    /// input threads do when their read times out at the deadline.
    fn on_quiet(&mut self, now: Instant) {
        for i in 0..self.assemblers.len() {
            if let Some(t) = self.assemblers[i].poll(now) {
                let made = self.combiner.on_telegram(i, t, now);
                self.distribute(made, now);
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let made = self.combiner.on_tick(now);
        self.distribute(made, now);
    }

    /// When output `j` next does something on its own.
    fn output_due(&self, j: usize, now: Instant) -> Option<Instant> {
        let out = &self.outputs[j];
        match self.config.outputs[j].mode {
            OutputMode::Push => out.timer.due(out.latest.is_some(), now),
            OutputMode::Sync { .. } => {
                let answer = (out.asked && out.latest.is_some()).then_some(now);
                [answer, out.next_own].into_iter().flatten().min()
            }
        }
    }

    fn run_output(&mut self, j: usize, now: Instant) -> io::Result<()> {
        let config = &self.config.outputs[j];
        match config.mode {
            OutputMode::Push => {
                let out = &mut self.outputs[j];
                if out.timer.due(out.latest.is_some(), now).is_some_and(|at| at <= now) {
                    out.timer.pending = false;
                    out.timer.last_sent = Some(now);
                    self.transmit(j, now)?;
                }
            }
            OutputMode::Sync { interval } => {
                if self.outputs[j].next_own.is_some_and(|at| at <= now) {
                    self.outputs[j].next_own = Some(now + interval);
                    let keepalive = codec::encode(&Message::KeepAlive);
                    self.printer.frames(
                        &config.can_if,
                        now,
                        &[keepalive],
                        json!({"inverter": j + 1, "keepalive": true}),
                    )?;
                }
                // An answer sooner than the profile allows is skipped: the
                // next request gets one (as the output thread does).
                let out = &mut self.outputs[j];
                let paced = out
                    .last_answer
                    .is_none_or(|at| now.saturating_duration_since(at) >= config.profile.min_gap());
                if std::mem::take(&mut out.asked) && out.latest.is_some() && paced {
                    out.last_answer = Some(now);
                    self.transmit(j, now)?;
                }
            }
        }
        Ok(())
    }

    fn transmit(&mut self, j: usize, now: Instant) -> io::Result<()> {
        let config = &self.config.outputs[j];
        let out = &mut self.outputs[j];
        let Some(shaped) = out.latest else {
            return Ok(());
        };
        let checked = checked_transmission(config, &mut out.view, &mut out.interlock, &shaped, now);
        let (state, set) = (checked.state, checked.frames);
        self.transmissions += 1;
        let about = match self.printer.format {
            Format::Candump => Value::Null,
            Format::Json => json!({
                "inverter": j + 1,
                "state": state.as_str(),
                "interlock": checked.trip.map(|t| t.to_string()),
                "combined": self.last.map(|c| json!({
                    "state": c.state.as_str(),
                    "inputs_online": c.inputs_online,
                    "i_lim_charge": c.battery.i_lim_charge,
                    "i_lim_discharge": c.battery.i_lim_discharge,
                    "made_at": self.printer.stamp(c.made_at),
                })),
            }),
        };
        self.printer.frames(&config.can_if, now, set.frames(), about)
    }

    /// The earliest of: the next tick, the assemblers' burst ends, the
    /// outputs' own deadlines.
    fn next_internal(&self, next_tick: Instant, now: Instant) -> Instant {
        let bursts = self.assemblers.iter().filter_map(Assembler::next_deadline);
        (0..self.outputs.len())
            .filter_map(|j| self.output_due(j, now))
            .chain(bursts)
            .fold(next_tick, Instant::min)
    }
}

/// Replays `sources` through the core as configured in `config`, writing
/// the transmissions to `out`. Returns what was read and done; write errors
/// (a closed pipe) end it early.
pub fn run(
    config: &Config,
    sources: &[Source],
    setpoints: &[SetpointAt],
    format: Format,
    out: &mut dyn Write,
) -> io::Result<Summary> {
    run_paced(config, sources, setpoints, format, Pace::Virtual, out)
}

/// [`run`], printing each transmission when `pace` says it is due.
pub fn run_paced(
    config: &Config,
    sources: &[Source],
    setpoints: &[SetpointAt],
    format: Format,
    pace: Pace,
    out: &mut dyn Write,
) -> io::Result<Summary> {
    let mut summary = Summary::default();
    let (events, skews) = read_events(config, sources, &mut summary);
    let Some(first) = events.first() else {
        return Ok(summary);
    };
    let epoch_us = first.at_us;
    // Any Instant serves as the origin: only differences are printed.
    let base = Instant::now();
    let at = |us: i64| base + Duration::from_micros((us - epoch_us) as u64);
    let capacities: Vec<f64> = config.inputs.iter().map(|i| i.capacity_ah).collect();
    let shares: Vec<InverterShare> = config.outputs.iter().map(|o| o.share).collect();
    let mut m = Machine {
        config,
        assemblers: vec![Assembler::default(); config.inputs.len()],
        combiner: Combiner::new(config.battery, &capacities, base).with_inverters(&shares),
        outputs: config
            .outputs
            .iter()
            .map(|o| OutputState {
                latest: None,
                timer: PushTimer {
                    min_delay: min_delay(o),
                    last_sent: None,
                    pending: false,
                },
                next_own: matches!(o.mode, OutputMode::Sync { .. }).then_some(base),
                asked: false,
                last_answer: None,
                view: view_of(o),
                interlock: Interlock::default(),
            })
            .collect(),
        printer: Printer {
            out,
            format,
            epoch_us,
            base,
            skews,
            paced: match pace {
                Pace::Virtual => None,
                Pace::Speed(speed) => Some((speed, Instant::now())),
            },
        },
        transmissions: 0,
        last: None,
    };
    let mut pending_setpoints: Vec<SetpointAt> = setpoints.to_vec();
    pending_setpoints.sort_by_key(|s| s.at);
    let mut pending_setpoints = pending_setpoints.into_iter().peekable();
    let end = at(events.last().map_or(epoch_us, |e| e.at_us));
    // Far beyond any log: "no deadline" for the combiner.
    let never = end + Duration::from_secs(3600);
    // As the daemon's combiner thread: it sleeps until the deadline the
    // combiner gave and then ticks (a deadline is not asked again on waking:
    // a moment just passed is no longer one).
    let mut next_tick = never;
    let mut events = events.iter().peekable();
    let mut now = base;
    loop {
        // Frames and setpoints of this instant first, as they arrive.
        while let Some(e) = events.next_if(|e| at(e.at_us) <= now) {
            m.on_frame(e, now, &mut summary);
        }
        while let Some(s) = pending_setpoints.next_if(|s| base + s.at <= now) {
            let setpoint = Setpoint {
                value: s.value,
                expires: s.ttl.map(|ttl| now + ttl),
            };
            let command = SetpointCommand {
                scope: Scope::System,
                kind: s.kind,
                setpoint: Some(setpoint),
            };
            let made = m.combiner.apply(command, now);
            m.distribute(made, now);
        }
        m.on_quiet(now);
        if next_tick <= now {
            m.on_tick(now);
        }
        for j in 0..m.outputs.len() {
            m.run_output(j, now)?;
        }
        if now >= end && events.peek().is_none() {
            break;
        }
        next_tick = m.combiner.next_deadline(now).unwrap_or(never);
        let mut next = m.next_internal(next_tick, now);
        if let Some(e) = events.peek() {
            next = next.min(at(e.at_us));
        }
        if let Some(s) = pending_setpoints.peek() {
            next = next.min(base + s.at);
        }
        // An output due now already ran: never stand still.
        now = next
            .max(now + Duration::from_micros(1))
            .min(end.max(now + Duration::from_micros(1)));
    }
    summary.transmissions = m.transmissions;
    summary.interlock_trips = m.outputs.iter().map(|o| o.interlock.trips).sum();
    Ok(summary)
}

#[cfg(test)]
mod tests;
