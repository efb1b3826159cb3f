//! The real `bms-gateway` binary as a running daemon in a test: its stderr
//! collected line by line, signals, and waiting for its exit.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_bms-gateway");

pub struct Daemon {
    pub child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `bms-gateway -c config` with info logging.
    pub fn start(config: &Path) -> Daemon {
        let mut child = Command::new(BIN)
            .arg("-c")
            .arg(config)
            .env("RUST_LOG", "info")
            // Its state beside its config, never in the tester's home.
            .env("STATE_DIRECTORY", config.parent().unwrap().join("state"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (stderr, sink) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Daemon { child, log }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the exit (at most 10 s); its code and how long it took.
    pub fn wait_exit(&mut self) -> (Option<i32>, Duration) {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return (s.code(), t0.elapsed());
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "not stopped after 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits up to `timeout` for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
