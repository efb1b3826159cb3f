//! The last 24 hours of the bank, each battery and each inverter, for the
//! status page's charts (spec section 16, docs/history.md).
//!
//! A ring of [`SLOTS`] rows, one per [`SLOT_S`] seconds of wall-clock time,
//! allocated once for a number of batteries and inverters: every value is
//! an `i16` in a fixed unit (0.1 %, 0.1 A...), [`NONE`] where nothing was
//! known (the gateway was not running, a battery was stale). Pure: the time
//! of each sample is passed in; nothing here reads a clock. The status
//! server's thread fills it from the status board ([`crate::http`]), the
//! state saver writes it to STATE-DIR ([`encode`], [`decode`]).

use crate::clock::round;
use serde::Serialize;

/// Seconds per row.
pub const SLOT_S: i64 = 10;
/// Rows kept: 24 h.
pub const SLOTS: usize = 8640;
/// The mark of an unknown value.
pub const NONE: i16 = i16::MIN;
/// `/api/history` without `step` gives at most this many rows (the page's
/// 24 h at one row a minute).
pub const AUTO_ROWS: i64 = 1440;
/// The largest `step` asked for (s).
pub const MAX_STEP: i64 = 86_400;

/// One charted quantity: its name (as in the MQTT payloads), its unit as
/// the stored integer's scale, and its decimals in JSON.
#[derive(Debug, Clone, Copy)]
struct Column {
    name: &'static str,
    /// Stored value = value x scale.
    scale: f64,
    decimals: i32,
}

const fn col(name: &'static str, scale: f64, decimals: i32) -> Column {
    Column { name, scale, decimals }
}

/// The bank's values, in the order of [`Sample::bank`]. Voltage in 0.1 V
/// so that high-voltage banks fit (up to 3276.7 V).
const BANK: [Column; 6] = [
    col("soc", 10.0, 1),
    col("v_avg", 10.0, 1),
    col("i_total", 10.0, 1),
    col("t_avg", 10.0, 1),
    col("i_lim_charge", 10.0, 1),
    col("i_lim_discharge", 10.0, 1),
];
/// Each battery's values, in the order of [`Sample::batteries`].
const PACK: [Column; 6] = [
    col("soc", 10.0, 1),
    col("i_total", 10.0, 1),
    col("share", 1000.0, 3),
    col("t_avg", 10.0, 1),
    col("v_cell_min", 1000.0, 3),
    col("v_cell_max", 1000.0, 3),
];
/// Each inverter's values as last sent, in the order of [`Sample::inverters`].
const SENT: [Column; 2] = [col("i_lim_charge", 10.0, 1), col("i_lim_discharge", 10.0, 1)];
/// After the bank's values: the charge limit's reason and binding battery,
/// then the discharge limit's (codes, see [`History::reasons`]).
const WHY_COLS: usize = 4;
const BANK_WIDTH: usize = BANK.len() + WHY_COLS;

/// Bytes one battery adds to the ring (and to the state file).
pub const BYTES_PER_BATTERY: usize = SLOTS * PACK.len() * 2;
/// Bytes one inverter adds.
pub const BYTES_PER_INVERTER: usize = SLOTS * SENT.len() * 2;
/// Bytes of the bank's own series.
pub const BYTES_BANK: usize = SLOTS * BANK_WIDTH * 2;

/// Why a combined limit is what it is: the reason's name and the binding
/// battery (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Why {
    pub reason: &'static str,
    pub battery: Option<usize>,
}

/// What the status board shows at one moment, as the history keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// soc, v_avg, i_total, t_avg, i_lim_charge, i_lim_discharge.
    pub bank: [Option<f64>; 6],
    pub why_charge: Option<Why>,
    pub why_discharge: Option<Why>,
    /// Per battery: soc, i_total, share, t_avg, v_cell_min, v_cell_max.
    pub batteries: Vec<[Option<f64>; 6]>,
    /// Per inverter: the charge and discharge limits last sent.
    pub inverters: Vec<[Option<f64>; 2]>,
}

/// What [`History::push`] did with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    /// Its row is already filled, or older than the newest (a clock set
    /// back): the history never rewrites the past.
    Skipped,
}

/// The ring.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    batteries: usize,
    inverters: usize,
    /// Row number (unix time / SLOT_S) of the newest row, and of the oldest
    /// row ever filled since the ring was last empty.
    newest: Option<i64>,
    first: i64,
    /// SLOTS x width values.
    cells: Vec<i16>,
    /// Limit reasons seen, by code (the index).
    reasons: Vec<String>,
}

impl Default for History {
    fn default() -> History {
        History::new(0, 0)
    }
}

/// `value` in a column's unit; [`NONE`] for unknown or not a number;
/// clamped to the column's range.
fn quantize(value: Option<f64>, c: &Column) -> i16 {
    match value {
        Some(v) if v.is_finite() => (v * c.scale).round().clamp(-32767.0, 32767.0) as i16,
        _ => NONE,
    }
}

impl History {
    /// An empty ring for `batteries` and `inverters`: the only allocation.
    pub fn new(batteries: usize, inverters: usize) -> History {
        History {
            batteries,
            inverters,
            newest: None,
            first: 0,
            cells: vec![NONE; SLOTS * width(batteries, inverters)],
            reasons: Vec::new(),
        }
    }

    pub fn batteries(&self) -> usize {
        self.batteries
    }

    pub fn inverters(&self) -> usize {
        self.inverters
    }

    /// Bytes of the ring's values.
    pub fn bytes(&self) -> usize {
        self.cells.len() * 2
    }

    /// Unix time of the newest row, if any.
    pub fn newest(&self) -> Option<i64> {
        self.newest.map(|r| r * SLOT_S)
    }

    fn width(&self) -> usize {
        width(self.batteries, self.inverters)
    }

    fn row(&self, r: i64) -> &[i16] {
        let w = self.width();
        let at = r.rem_euclid(SLOTS as i64) as usize * w;
        &self.cells[at..at + w]
    }

    fn row_mut(&mut self, r: i64) -> &mut [i16] {
        let w = self.width();
        let at = r.rem_euclid(SLOTS as i64) as usize * w;
        &mut self.cells[at..at + w]
    }

    /// The same history for another number of batteries or inverters (a
    /// reload): the bank's rows and those of the batteries and inverters
    /// that keep their position are kept. A new allocation.
    pub fn reshaped(&self, batteries: usize, inverters: usize) -> History {
        let mut new = History {
            cells: vec![NONE; SLOTS * width(batteries, inverters)],
            batteries,
            inverters,
            reasons: self.reasons.clone(),
            ..*self
        };
        let packs = PACK.len() * batteries.min(self.batteries);
        let sent = SENT.len() * inverters.min(self.inverters);
        let (from, at) = (self.sent_at(), new.sent_at());
        for r in 0..SLOTS as i64 {
            let (old, to) = (self.row(r), new.row_mut(r));
            to[..BANK_WIDTH + packs].copy_from_slice(&old[..BANK_WIDTH + packs]);
            to[at..at + sent].copy_from_slice(&old[from..from + sent]);
        }
        new
    }

    fn sent_at(&self) -> usize {
        BANK_WIDTH + PACK.len() * self.batteries
    }

    /// The code of a limit reason (its index, learnt at first sight).
    fn code(&mut self, why: Option<Why>) -> [i16; 2] {
        let Some(why) = why else { return [NONE, NONE] };
        let code = match self.reasons.iter().position(|r| r == why.reason) {
            Some(i) => i,
            None => {
                self.reasons.push(why.reason.to_string());
                self.reasons.len() - 1
            }
        };
        let battery = why.battery.map_or(NONE, |b| b.min(32767) as i16);
        [code as i16, battery]
    }

    /// Keeps `sample` as the row of `unix` (seconds): rows skipped since
    /// the newest become gaps. A sample with more or fewer batteries or
    /// inverters than the ring has reshapes it first (after a reload).
    pub fn push(&mut self, unix: i64, sample: &Sample) -> Pushed {
        if (sample.batteries.len(), sample.inverters.len()) != (self.batteries, self.inverters) {
            *self = self.reshaped(sample.batteries.len(), sample.inverters.len());
        }
        let r = unix.div_euclid(SLOT_S);
        match self.newest {
            Some(newest) if r <= newest => return Pushed::Skipped,
            Some(newest) if r - newest < SLOTS as i64 => {
                for gap in newest + 1..r {
                    self.row_mut(gap).fill(NONE);
                }
            }
            _ => {
                // Empty, or everything kept is older than 24 h.
                self.cells.fill(NONE);
                self.first = r;
            }
        }
        let why = [self.code(sample.why_charge), self.code(sample.why_discharge)];
        let sent_at = self.sent_at();
        let row = self.row_mut(r);
        for (cell, (v, c)) in row.iter_mut().zip(sample.bank.iter().zip(&BANK)) {
            *cell = quantize(*v, c);
        }
        row[BANK.len()..BANK_WIDTH].copy_from_slice(&[why[0][0], why[0][1], why[1][0], why[1][1]]);
        for (k, values) in sample.batteries.iter().enumerate() {
            let at = BANK_WIDTH + k * PACK.len();
            for (cell, (v, c)) in row[at..].iter_mut().zip(values.iter().zip(&PACK)) {
                *cell = quantize(*v, c);
            }
        }
        for (j, values) in sample.inverters.iter().enumerate() {
            let at = sent_at + j * SENT.len();
            for (cell, (v, c)) in row[at..].iter_mut().zip(values.iter().zip(&SENT)) {
                *cell = quantize(*v, c);
            }
        }
        self.newest = Some(r);
        Pushed::Stored
    }

    /// The rows kept: first and last row number.
    fn span(&self) -> Option<(i64, i64)> {
        let newest = self.newest?;
        Some((self.first.max(newest - SLOTS as i64 + 1), newest))
    }

    /// The table `/api/history` serves: rows of `step` seconds (a multiple
    /// of [`SLOT_S`]; `None`: the smallest giving at most [`AUTO_ROWS`]
    /// rows) from the one holding `since` (unix seconds; `None`: the oldest
    /// kept). A row's value is the mean of its known samples.
    pub fn table(&self, since: Option<i64>, step: Option<i64>) -> Table {
        let (oldest, newest) = self.span().unwrap_or((0, -1));
        let step = step.unwrap_or_else(|| {
            let rows = newest - oldest + 1;
            ((rows + AUTO_ROWS - 1) / AUTO_ROWS).max(1) * SLOT_S
        });
        let per = step / SLOT_S;
        let from = since.map_or(oldest, |s| s.div_euclid(SLOT_S).max(oldest));
        let bucket = |r: i64| (r * SLOT_S).div_euclid(step);
        let (first, last) = (bucket(from), bucket(newest));
        let rows = if newest < from { 0 } else { (last - first + 1) as usize };
        // Each output row: the ring rows it averages, those kept only.
        let rows_of = |b: i64| (b * per).max(oldest)..=((b + 1) * per - 1).min(newest);
        let series = |offset: usize, c: &Column| -> Option<Vec<Option<f64>>> {
            let values: Vec<Option<f64>> = (first..first + rows as i64)
                .map(|b| mean(rows_of(b).map(|r| self.row(r)[offset])).map(|m| round(m / c.scale, c.decimals)))
                .collect();
            values.iter().any(Option::is_some).then_some(values)
        };
        let columns = |base: usize, cols: &[Column]| -> Vec<(&'static str, Option<Vec<Option<f64>>>)> {
            cols.iter()
                .enumerate()
                .map(|(n, c)| (c.name, series(base + n, c)))
                .collect()
        };
        let why = |offset: usize| -> Vec<Change> {
            let mut changes: Vec<Change> = Vec::new();
            let mut previous = None;
            for (n, b) in (first..first + rows as i64).enumerate() {
                // The row's last known reason.
                let code = rows_of(b)
                    .map(|r| (self.row(r)[offset], self.row(r)[offset + 1]))
                    .rfind(|c| c.0 != NONE);
                if code != previous {
                    previous = code;
                    let reason = code.and_then(|c| self.reasons.get(c.0 as usize)).cloned();
                    let battery = code.and_then(|c| (c.1 != NONE).then_some(c.1));
                    changes.push(Change(n, reason, battery));
                }
            }
            changes
        };
        Table {
            step,
            start: first * step,
            rows,
            bank: columns(0, &BANK).into_iter().collect(),
            why: WhyTable {
                charge: why(BANK.len()),
                discharge: why(BANK.len() + 2),
            },
            batteries: (0..self.batteries)
                .map(|k| columns(BANK_WIDTH + k * PACK.len(), &PACK).into_iter().collect())
                .collect(),
            inverters: (0..self.inverters)
                .map(|j| columns(self.sent_at() + j * SENT.len(), &SENT).into_iter().collect())
                .collect(),
        }
    }
}

fn width(batteries: usize, inverters: usize) -> usize {
    BANK_WIDTH + PACK.len() * batteries + SENT.len() * inverters
}

fn mean(values: impl Iterator<Item = i16>) -> Option<f64> {
    let (sum, n) = values
        .filter(|&v| v != NONE)
        .fold((0i64, 0i64), |(s, n), v| (s + i64::from(v), n + 1));
    (n > 0).then(|| sum as f64 / n as f64)
}

/// Named columns: a column none of whose rows is known is `null`.
type Columns = std::collections::BTreeMap<&'static str, Option<Vec<Option<f64>>>>;

/// `/api/history` (docs/history.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    /// Seconds per row.
    pub step: i64,
    /// Unix time of row 0's start; row n starts at start + n x step.
    pub start: i64,
    pub rows: usize,
    pub bank: Columns,
    /// Where the limits' reasons change.
    pub why: WhyTable,
    pub batteries: Vec<Columns>,
    pub inverters: Vec<Columns>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WhyTable {
    pub charge: Vec<Change>,
    pub discharge: Vec<Change>,
}

/// From row `.0` on, the reason is `.1` and the binding battery `.2`
/// (1-based); JSON `[row, reason, battery]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change(pub usize, pub Option<String>, pub Option<i16>);

impl Table {
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("the history serializes")
    }
}

/// `since` and `step` of `/api/history`, or why they are refused.
pub fn parse_query(query: &str) -> Result<(Option<i64>, Option<i64>), String> {
    let (mut since, mut step) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || -> Result<i64, String> {
            (value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() && value.len() <= 12)
                .then(|| value.parse::<i64>().ok())
                .flatten()
                .ok_or_else(|| format!("{key} must be a whole number of seconds, not {value:?}"))
        };
        match key {
            "since" => {
                let s = number()?;
                if s > LATEST_SINCE {
                    return Err(format!("since must be a unix time up to {LATEST_SINCE}"));
                }
                since = Some(s);
            }
            "step" => {
                let s = number()?;
                if s == 0 || s % SLOT_S != 0 || s > MAX_STEP {
                    return Err(format!("step must be a multiple of {SLOT_S} s up to {MAX_STEP} s"));
                }
                step = Some(s);
            }
            _ => return Err(format!("unknown parameter {key:?}: /api/history takes since and step")),
        }
    }
    Ok((since, step))
}

/// The latest `since` accepted: the end of the year 9999.
pub const LATEST_SINCE: i64 = 253_402_300_799;

/// The state file's magic and format.
const MAGIC: &[u8; 8] = b"BMSGHIST";
const FORMAT: u32 = 1;

/// The ring as bytes for STATE-DIR: a header, the reasons' names, the
/// values (little-endian) and a checksum (FNV-1a, 64 bits) of all before it.
pub fn encode(h: &History) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + h.cells.len() * 2);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&(SLOT_S as u32).to_le_bytes());
    out.extend_from_slice(&(SLOTS as u32).to_le_bytes());
    out.extend_from_slice(&(h.batteries as u16).to_le_bytes());
    out.extend_from_slice(&(h.inverters as u16).to_le_bytes());
    out.extend_from_slice(&h.newest.unwrap_or(i64::MIN).to_le_bytes());
    out.extend_from_slice(&h.first.to_le_bytes());
    out.push(h.reasons.len().min(255) as u8);
    for r in h.reasons.iter().take(255) {
        let r = &r.as_bytes()[..r.len().min(255)];
        out.push(r.len() as u8);
        out.extend_from_slice(r);
    }
    for v in &h.cells {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// The ring from [`encode`]'s bytes, or why they cannot be used.
pub fn decode(bytes: &[u8]) -> Result<History, String> {
    let (body, sum) = bytes.split_last_chunk::<8>().ok_or("too short for a history file")?;
    if fnv1a(body) != u64::from_le_bytes(*sum) {
        return Err("checksum mismatch (truncated or damaged)".into());
    }
    let mut r = Reader(body);
    if r.take(8)? != MAGIC {
        return Err("not a history file".into());
    }
    let format = r.u32()?;
    let (slot, slots) = (r.u32()?, r.u32()?);
    if format != FORMAT || i64::from(slot) != SLOT_S || slots as usize != SLOTS {
        return Err(format!(
            "format {format} with {slots} rows of {slot} s is not this version's"
        ));
    }
    let batteries = usize::from(r.u16()?);
    let inverters = usize::from(r.u16()?);
    let newest = Some(r.i64()?).filter(|&n| n != i64::MIN);
    let first = r.i64()?;
    // Rows of real times only: a row number far out would overflow the
    // arithmetic of times and rows.
    let real = |row: i64| (0..=LATEST_SINCE / SLOT_S).contains(&row);
    if newest.is_some_and(|n| !real(n) || first > n) || !real(first) {
        return Err(format!("rows {first} to {newest:?} are no real times"));
    }
    let reasons = (0..r.take(1)?[0])
        .map(|_| {
            let len = r.take(1)?[0];
            let name = r.take(usize::from(len))?;
            String::from_utf8(name.to_vec()).map_err(|_| "a reason is not text".to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let values = r.0;
    if values.len() != SLOTS * width(batteries, inverters) * 2 {
        return Err("the values' length does not match the header".into());
    }
    let cells = values
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    Ok(History {
        batteries,
        inverters,
        newest,
        first,
        cells,
        reasons,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the file ends early".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

/// FNV-1a, 64 bits: detects a damaged or truncated file (not an attack).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
