//! The state the gateway keeps on disk across restarts: the energy
//! counters in `STATE-DIR/state.json`, the status page's history in
//! `STATE-DIR/history.bin`.
//!
//! Rules (docs/energy-and-events.md):
//! - a save is atomic: the new state goes to `state.json.tmp`, is flushed to
//!   the disk (fsync), renamed over `state.json`, and the directory is
//!   flushed too, so that after a crash or a power cut the file is either
//!   the old state or the new one, never a mix;
//! - a missing file is a first start; a file that cannot be read or parsed
//!   (corrupt, truncated, from a future version) is logged, moved aside as
//!   `state.json.corrupt-UNIXTIME` (`history.bin.corrupt-UNIXTIME`) and replaced with a fresh state: never a
//!   reason not to start;
//! - a save that fails (read-only or full disk) is logged, at most once a
//!   minute, and never stops anything else; the next save tries again.

use crate::config::Config;
use crate::energy;
use crate::history::{self, History};
use crate::loglimit::{LogLimit, Repeats};
use crate::shutdown::Stop;
use crate::status::{Latest, StatusBoard};
use crossbeam_channel::{select, tick};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The state file's name inside STATE-DIR.
pub const FILE: &str = "state.json";
/// How often the daemon saves (and once more at stop).
pub const SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// The history's file inside STATE-DIR (binary, [`crate::history::encode`]).
pub const HISTORY_FILE: &str = "history.bin";
/// The format written today.
pub const VERSION: u32 = 1;

/// Everything saved.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Unix seconds of the save.
    pub saved_at: f64,
    pub energy: energy::Saved,
}

/// STATE-DIR when the config does not set it: systemd's
/// `$STATE_DIRECTORY` (the unit's `StateDirectory=`; the first entry if it
/// lists several), else `~/.bms_gateway/state`. Pure: the environment is
/// passed in.
pub fn default_dir(state_directory: Option<&str>, home: Option<&Path>) -> Option<PathBuf> {
    if let Some(first) = state_directory.and_then(|d| d.split(':').find(|s| !s.is_empty())) {
        return Some(PathBuf::from(first));
    }
    home.map(|h| h.join(".bms_gateway").join("state"))
}

/// STATE-DIR from the config, or the default from the environment.
pub fn resolve(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(d) = configured {
        return Some(d.to_path_buf());
    }
    let state_directory = std::env::var("STATE_DIRECTORY").ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    default_dir(state_directory.as_deref(), home.as_deref())
}

/// How loading went, for the log and the tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    /// Read back.
    Found,
    /// No file yet: a first start.
    Missing,
    /// Unusable; moved to this path (or left in place when even that failed).
    Corrupt { why: String, moved_to: Option<PathBuf> },
    /// The directory cannot be used at all; nothing will be saved.
    Unavailable(String),
}

/// The state directory and the rate limit of its error messages.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    failures: LogLimit,
}

impl Store {
    /// Opens (creating it if needed) `dir` and reads the state in it. Never
    /// fails: anything unusable is reported in [`Loaded`] and logged, and
    /// the state starts fresh.
    pub fn open(dir: &Path) -> (Store, State, Loaded) {
        let store = Store {
            dir: dir.to_path_buf(),
            failures: LogLimit::new(Duration::from_secs(60), Repeats::AnyText),
        };
        let (state, loaded) = store.load();
        match &loaded {
            Loaded::Found => log::info!("state read from {}", store.path().display()),
            Loaded::Missing => log::info!("no saved state in {}: counters start at 0", dir.display()),
            Loaded::Corrupt { why, moved_to } => log::error!(
                "state file {} is unusable ({why}); {}; counters start at 0",
                store.path().display(),
                moved_to
                    .as_ref()
                    .map_or("it could not be moved aside".into(), |p| format!(
                        "moved aside to {}",
                        p.display()
                    )),
            ),
            Loaded::Unavailable(why) => log::error!(
                "state directory {} cannot be used ({why}): energy counters will not survive a restart; \
                 check STATE-DIR and its permissions",
                dir.display()
            ),
        }
        (store, state, loaded)
    }

    /// `STATE-DIR/state.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    fn load(&self) -> (State, Loaded) {
        if let Err(e) = fs::create_dir_all(&self.dir) {
            return (State::default(), Loaded::Unavailable(e.to_string()));
        }
        let path = self.path();
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (State::default(), Loaded::Missing),
            Err(e) => return (State::default(), self.set_aside(&path, e.to_string())),
        };
        match parse(&text) {
            Ok(state) => (state, Loaded::Found),
            Err(why) => (State::default(), self.set_aside(&path, why)),
        }
    }

    fn set_aside(&self, path: &Path, why: String) -> Loaded {
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = path.file_name().map_or(FILE.into(), |n| n.to_string_lossy());
        let aside = self.dir.join(format!("{name}.corrupt-{stamp}"));
        let moved_to = fs::rename(path, &aside).ok().map(|()| aside);
        Loaded::Corrupt { why, moved_to }
    }

    /// Saves `state` atomically; a failure is logged (rate-limited) and
    /// returned.
    pub fn save(&mut self, state: &State) -> io::Result<()> {
        let result = write_atomically(&self.dir, FILE, &serialize(state));
        if let Err(e) = &result {
            let line = format!(
                "cannot save the state to {}: {e}; the gateway goes on, the counters are kept in memory \
                 and saved again in {} s",
                self.path().display(),
                SAVE_INTERVAL.as_secs()
            );
            if let Some(line) = self.failures.check(line, Instant::now()) {
                log::error!("{line}");
            }
        }
        result
    }
}

impl Store {
    /// `STATE-DIR/history.bin`.
    pub fn history_path(&self) -> PathBuf {
        self.dir.join(HISTORY_FILE)
    }

    /// The saved history, by the same rules as the state: missing is a
    /// first start, unusable is logged and moved aside.
    pub fn load_history(&self) -> (Option<History>, Loaded) {
        let path = self.history_path();
        let loaded = match fs::read(&path) {
            Ok(bytes) => match history::decode(&bytes) {
                Ok(h) => return (Some(h), Loaded::Found),
                Err(why) => self.set_aside(&path, why),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Loaded::Missing,
            Err(e) => self.set_aside(&path, e.to_string()),
        };
        if let Loaded::Corrupt { why, moved_to } = &loaded {
            log::error!(
                "history file {} is unusable ({why}); moved aside to {}; the charts start empty",
                path.display(),
                moved_to
                    .as_ref()
                    .map_or("nowhere (it could not be moved)".into(), |p| p.display().to_string())
            );
        }
        (None, loaded)
    }

    /// Saves the board's history atomically (encoded under its lock, written
    /// after); a failure is logged like the state's.
    pub fn save_history(&mut self, board: &StatusBoard) -> io::Result<()> {
        let bytes = board.history(|h| history::encode(h));
        let result = write_atomically(&self.dir, HISTORY_FILE, &bytes);
        if let Err(e) = &result
            && let Some(line) = self.failures.check(
                format!("cannot save the history to {}: {e}", self.history_path().display()),
                Instant::now(),
            )
        {
            log::error!("{line}");
        }
        result
    }
}

/// Puts a saved history on a new board, shaped for its configuration.
pub fn seed_history(board: &StatusBoard, saved: &History) {
    board.history(|h| *h = saved.reshaped(h.batteries(), h.inverters()));
}

/// Puts saved counters on a new board (at start and after a reload).
pub fn seed(board: &StatusBoard, config: &Config, saved: &energy::Saved) {
    let names: Vec<&str> = config.inputs.iter().map(|i| i.can_if.as_str()).collect();
    let (meters, base) = saved.restore(&names);
    for (i, meter) in meters.into_iter().enumerate() {
        board.input(i, |s| s.energy = meter);
    }
    board.system(|s| s.energy_base = base);
}

/// What to save from the board now.
pub fn capture(board: &StatusBoard, config: &Config) -> State {
    let names: Vec<&str> = config.inputs.iter().map(|i| i.can_if.as_str()).collect();
    let meters: Vec<energy::Meter> = (0..names.len()).map(|i| board.input(i, |s| s.energy)).collect();
    let base = board.system(|s| s.energy_base);
    State {
        version: VERSION,
        saved_at: crate::clock::unix(SystemTime::now()),
        energy: energy::Saved::of(base, &names, &meters),
    }
}

/// The saver thread: saves every SAVE_INTERVAL until `stop`. (The final
/// save at stop is the daemon's, once every worker has ended.)
/// It follows reloads: each save is of the latest configuration and board.
pub fn keep_saving(store: &mut Store, latest: &Latest, stop: &Stop) {
    let ticker = tick(SAVE_INTERVAL);
    loop {
        select! {
            recv(stop.receiver()) -> _ => return,
            recv(ticker) -> _ => {
                // A failure is logged by save(); the next tick tries again.
                let (config, board) = latest.get();
                let _ = store.save(&capture(&board, &config));
                let _ = store.save_history(&board);
            }
        }
    }
}

/// The JSON text of a state.
pub fn serialize(state: &State) -> Vec<u8> {
    let mut text = serde_json::to_vec_pretty(state).expect("state serializes");
    text.push(b'\n');
    text
}

/// A state file's content, or why it cannot be used.
pub fn parse(text: &[u8]) -> Result<State, String> {
    let state: State = serde_json::from_slice(text).map_err(|e| format!("not a valid state file: {e}"))?;
    if state.version != VERSION {
        return Err(format!(
            "format version {} is not {VERSION} (written by another version of bms-gateway)",
            state.version
        ));
    }
    Ok(state)
}

/// Temporary file, fsync, rename, fsync of the directory.
fn write_atomically(dir: &Path, name: &str, content: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::{Counter, SavedBattery};

    fn state(kwh: f64) -> State {
        State {
            version: VERSION,
            saved_at: 1_700_000_000.0,
            energy: energy::Saved {
                system: Counter {
                    charged_kwh: kwh,
                    discharged_kwh: kwh / 2.0,
                },
                batteries: vec![SavedBattery {
                    can_if: "can0".into(),
                    total: Counter {
                        charged_kwh: kwh,
                        discharged_kwh: kwh / 2.0,
                    },
                    bms: None,
                }],
            },
        }
    }

    #[test]
    fn default_dir_follows_systemd_then_home() {
        assert_eq!(
            default_dir(Some("/var/lib/bms-gateway"), Some(Path::new("/root"))),
            Some(PathBuf::from("/var/lib/bms-gateway"))
        );
        assert_eq!(
            default_dir(Some("/var/lib/a:/var/lib/b"), None),
            Some(PathBuf::from("/var/lib/a"))
        );
        assert_eq!(
            default_dir(None, Some(Path::new("/home/pi"))),
            Some(PathBuf::from("/home/pi/.bms_gateway/state"))
        );
        assert_eq!(default_dir(Some(""), None), None);
    }

    #[test]
    fn saves_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, fresh, loaded) = Store::open(dir.path());
        assert_eq!((fresh, loaded), (State::default(), Loaded::Missing));
        store.save(&state(12.5)).unwrap();
        let (_, back, loaded) = Store::open(dir.path());
        assert_eq!(loaded, Loaded::Found);
        assert_eq!(back, state(12.5));
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_or_truncated_file_is_moved_aside_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let whole = serialize(&state(3.0));
        for bad in [&whole[..whole.len() / 2], b"\x00\xff garbage", b""] {
            fs::write(dir.path().join(FILE), bad).unwrap();
            let (mut store, fresh, loaded) = Store::open(dir.path());
            assert_eq!(fresh, State::default());
            let Loaded::Corrupt {
                moved_to: Some(aside), ..
            } = loaded
            else {
                panic!("{loaded:?}")
            };
            assert_eq!(fs::read(&aside).unwrap(), bad);
            assert!(!dir.path().join(FILE).exists());
            store.save(&state(4.0)).unwrap();
            assert_eq!(Store::open(dir.path()).1, state(4.0));
            fs::remove_file(aside).unwrap();
        }
    }

    #[test]
    fn a_board_is_captured_and_seeded_by_can_interface() {
        let text = "GATEWAY-ACTIVATED = true\n[[bmses-in]]\nCAN-IF = \"a\"\nCAPACITY-AH = 1\n\
                    [[bmses-in]]\nCAN-IF = \"b\"\nCAPACITY-AH = 1\n[[bmses-out]]\nCAN-IF = \"o\"\n";
        let config = crate::config::parse(text).unwrap();
        let board = StatusBoard::new(2, 1);
        let c = |x: f64| Counter {
            charged_kwh: x,
            discharged_kwh: x / 2.0,
        };
        board.input(0, |s| s.energy = energy::Meter::restored(c(2.0), None));
        board.input(1, |s| s.energy = energy::Meter::restored(c(3.0), Some(c(40.0))));
        board.system(|s| s.energy_base = c(1.0));
        let saved = capture(&board, &config).energy;
        assert_eq!(saved.system, c(6.0));
        // The same batteries in the other order keep their own counters.
        let swapped = crate::config::parse(
            &text
                .replace("\"a\"", "\"x\"")
                .replace("\"b\"", "\"a\"")
                .replace("\"x\"", "\"b\""),
        )
        .unwrap();
        let again = StatusBoard::new(2, 1);
        seed(&again, &swapped, &saved);
        assert_eq!(again.input(0, |s| s.energy.total), c(3.0));
        assert_eq!(again.input(0, |s| s.energy.bms_reading()), Some(c(40.0)));
        assert_eq!(again.input(1, |s| s.energy.total), c(2.0));
        assert_eq!(again.snapshot().energy(), c(6.0));
    }

    #[test]
    fn the_history_is_saved_read_back_and_a_damaged_one_moved_aside() {
        use crate::history::{Sample, Table};
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _, _) = Store::open(dir.path());
        assert_eq!(store.load_history(), (None, Loaded::Missing));
        let board = StatusBoard::new(1, 0);
        let sample = Sample {
            bank: [Some(55.5), None, None, None, None, None],
            batteries: vec![[Some(44.4), None, None, None, None, None]],
            ..Sample::default()
        };
        board.history(|h| h.push(1_764_000_000, &sample));
        store.save_history(&board).unwrap();
        let (back, loaded) = store.load_history();
        assert_eq!(loaded, Loaded::Found);
        let again = StatusBoard::new(1, 0);
        seed_history(&again, &back.unwrap());
        let table: Table = again.history(|h| h.table(None, None));
        assert_eq!(table.bank["soc"], Some(vec![Some(55.5)]));
        assert_eq!(table.batteries[0]["soc"], Some(vec![Some(44.4)]));
        assert!(!dir.path().join("history.bin.tmp").exists());
        // One byte changed: moved aside, the charts start empty.
        let mut bytes = fs::read(store.history_path()).unwrap();
        bytes[40] ^= 0xff;
        fs::write(store.history_path(), &bytes).unwrap();
        let (none, loaded) = store.load_history();
        assert!(none.is_none());
        let Loaded::Corrupt {
            moved_to: Some(aside), ..
        } = loaded
        else {
            panic!("{loaded:?}")
        };
        assert!(
            aside
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("history.bin.corrupt-")
        );
        assert_eq!(fs::read(aside).unwrap(), bytes);
        assert!(!store.history_path().exists());
    }

    #[test]
    fn another_version_is_not_read_as_this_one() {
        let mut s = state(1.0);
        s.version = 99;
        assert!(parse(&serialize(&s)).unwrap_err().contains("version 99"));
    }

    #[test]
    fn an_unwritable_directory_fails_the_save_and_nothing_else() {
        // A path below a regular file can be neither created nor written,
        // whoever runs the test (root ignores permission bits).
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("file"), b"x").unwrap();
        let below = dir.path().join("file").join("state");
        let (mut store, fresh, loaded) = Store::open(&below);
        assert!(matches!(loaded, Loaded::Unavailable(_)), "{loaded:?}");
        assert_eq!(fresh, State::default());
        assert!(store.save(&state(1.0)).is_err());
        assert!(store.save(&state(2.0)).is_err());
    }
}
