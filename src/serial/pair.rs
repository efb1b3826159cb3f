//! An in-process serial link: the gateway's end is opened by path like a
//! real port, the far end is handed to whoever plays the pack (the demo, a
//! test). A link can be unplugged (both ends fail and the path cannot be
//! opened) and plugged again (a new far end), as a USB adapter can.

use super::{LineSettings, SerialError, SerialOpener, SerialPort};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The named links; opens the gateway's ends.
#[derive(Default)]
pub struct Pairs {
    links: Mutex<HashMap<String, Plugged>>,
}

/// A plugged link: the gateway's end, waiting to be opened.
struct Plugged {
    near: PairEnd,
    plugged: Arc<AtomicBool>,
}

impl Pairs {
    pub fn new() -> Pairs {
        Pairs::default()
    }

    /// Plugs a link in at `path` (replacing one there) and returns its far end.
    pub fn plug(&self, path: &str) -> PairEnd {
        let (to_far, from_near) = unbounded();
        let (to_near, from_far) = unbounded();
        let plugged = Arc::new(AtomicBool::new(true));
        let end = |tx, rx| PairEnd {
            tx,
            rx,
            pending: Vec::new(),
            plugged: plugged.clone(),
        };
        let near = end(to_far, from_far);
        let far = end(to_near, from_near);
        let old = self.lock().insert(
            path.to_string(),
            Plugged {
                near,
                plugged: plugged.clone(),
            },
        );
        if let Some(old) = old {
            old.plugged.store(false, Ordering::SeqCst);
        }
        far
    }

    /// Unplugs the link at `path`: both ends fail from now on.
    pub fn unplug(&self, path: &str) {
        if let Some(old) = self.lock().remove(path) {
            old.plugged.store(false, Ordering::SeqCst);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Plugged>> {
        crate::sync::lock(&self.links)
    }
}

impl SerialOpener for Pairs {
    /// The line settings mean nothing in-process.
    fn open(&self, path: &str, _line: LineSettings) -> Result<Box<dyn SerialPort>, SerialError> {
        let links = self.lock();
        let link = links
            .get(path)
            .filter(|l| l.plugged.load(Ordering::SeqCst))
            .ok_or_else(|| SerialError(format!("{path}: no such port")))?;
        Ok(Box::new(link.near.clone()))
    }
}

/// One end of a link.
#[derive(Clone)]
pub struct PairEnd {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    /// Received and not yet read.
    pending: Vec<u8>,
    plugged: Arc<AtomicBool>,
}

impl PairEnd {
    fn check(&self) -> Result<(), SerialError> {
        if self.plugged.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(SerialError("the port is gone (unplugged)".into()))
        }
    }

    /// Whether the link is still plugged in.
    pub fn plugged(&self) -> bool {
        self.plugged.load(Ordering::SeqCst)
    }
}

impl SerialPort for PairEnd {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), SerialError> {
        self.check()?;
        self.tx
            .send(bytes.to_vec())
            .map_err(|_| SerialError("the far end is closed".into()))
    }

    fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, SerialError> {
        self.check()?;
        if self.pending.is_empty() {
            match self.rx.recv_deadline(deadline) {
                Ok(bytes) => self.pending = bytes,
                Err(RecvTimeoutError::Timeout) => return Ok(0),
                Err(RecvTimeoutError::Disconnected) => return Err(SerialError("the far end is closed".into())),
            }
        }
        let n = self.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }

    fn discard_input(&mut self) -> Result<(), SerialError> {
        self.check()?;
        self.pending.clear();
        while self.rx.try_recv().is_ok() {}
        Ok(())
    }
}
