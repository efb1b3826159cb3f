//! One battery input's thread: reads its CAN interface, decodes frames,
//! assembles telegrams and hands complete telegrams (never single frames) to
//! the combiner. Bad frames are counted and logged, rate-limited, with the
//! interface name. A failing interface is reopened with back-off; meanwhile
//! the input simply turns stale in the combiner.

use crate::can::{CanError, CanOpener, CanPort, backoff};
use crate::codec::{self, Message};
use crate::config::InputConfig;
use crate::frame::Frame;
use crate::shutdown::{self, RateLimit};
use crate::status::{LinkState, StatusBoard};
use crate::telegram::{Assembler, Telegram};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

/// How long one blocking read waits, which bounds how quickly the thread
/// notices a stop request.
pub const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// A telegram on its way to the combiner.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    pub input: usize,
    pub telegram: Telegram,
    pub at: Instant,
}

/// Everything one input thread needs.
pub struct Input<'a> {
    pub index: usize,
    pub config: &'a InputConfig,
    pub opener: &'a dyn CanOpener,
    pub telegrams: &'a Sender<Delivery>,
    pub board: &'a StatusBoard,
    pub stop: &'a Receiver<()>,
    /// Called once the interface has been tried the first time.
    pub opened: &'a (dyn Fn() + Sync),
    /// Called at least every READ_TIMEOUT while the thread is alive.
    pub heartbeat: &'a (dyn Fn() + Sync),
}

/// Counters kept locally and flushed to the board with each telegram, so the
/// hot path takes no lock per frame.
#[derive(Default)]
struct Counters {
    frames: u64,
    invalid: u64,
    dropped: u64,
}

impl Input<'_> {
    fn name(&self) -> &str {
        &self.config.can_if
    }

    fn set_link(&self, link: LinkState) {
        let changed = self.board.input(self.index, |s| {
            let changed = s.link != link;
            s.link = link.clone();
            changed
        });
        if changed {
            match &link {
                LinkState::Up => log::info!("battery {} ({}): interface up", self.index + 1, self.name()),
                LinkState::Down(why) => log::warn!("battery {} ({}): {why}; retrying", self.index + 1, self.name()),
                LinkState::Opening => {}
            }
        }
    }

    /// Runs until stopped.
    pub fn run(&self) {
        let mut failures = 0u32;
        let mut first = true;
        let mut counters = Counters::default();
        let mut bad_frames = RateLimit::new(Duration::from_secs(10));
        while !shutdown::requested(self.stop) {
            (self.heartbeat)();
            let opened = self.opener.open(self.name());
            if std::mem::take(&mut first) {
                (self.opened)();
            }
            let mut port = match opened {
                Ok(port) => port,
                Err(e) => {
                    self.set_link(LinkState::Down(e.to_string()));
                    if self.wait(backoff(failures)) {
                        return;
                    }
                    failures = failures.saturating_add(1);
                    continue;
                }
            };
            failures = 0;
            self.set_link(LinkState::Up);
            // A new port starts a new telegram: nothing from before the gap.
            let mut assembler = Assembler::default();
            match self.serve(port.as_mut(), &mut assembler, &mut counters, &mut bad_frames) {
                Ok(()) => return,
                Err(e) => self.set_link(LinkState::Down(e.to_string())),
            }
        }
    }

    /// Sleeps with heartbeats; true when stopped.
    fn wait(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            (self.heartbeat)();
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if shutdown::sleep(self.stop, left.min(READ_TIMEOUT)) {
                return true;
            }
        }
    }

    /// Reads until stopped (`Ok`) or the port must be reopened (`Err`).
    fn serve(
        &self,
        port: &mut dyn CanPort,
        assembler: &mut Assembler,
        counters: &mut Counters,
        bad_frames: &mut RateLimit,
    ) -> Result<(), CanError> {
        let mut next_poll = Instant::now();
        let mut down_since: Option<Instant> = None;
        while !shutdown::requested(self.stop) {
            (self.heartbeat)();
            let now = Instant::now();
            if let Some(period) = self.config.poll_interval
                && now >= next_poll
            {
                next_poll = now + period;
                // A failed poll is seen again on the next read; nothing to add here.
                let _ = port.write(&codec::encode(&Message::KeepAlive));
            }
            match port.read(READ_TIMEOUT) {
                Ok(Some(frame)) => {
                    if down_since.take().is_some() {
                        self.set_link(LinkState::Up);
                    }
                    self.on_frame(&frame, assembler, counters, bad_frames);
                }
                Ok(None) => {}
                Err(CanError::Down(why)) => {
                    if down_since.is_none() {
                        down_since = Some(now);
                        self.set_link(LinkState::Down(format!("interface down ({why})")));
                    }
                    if self.wait(Duration::from_millis(200)) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn on_frame(&self, frame: &Frame, assembler: &mut Assembler, counters: &mut Counters, bad: &mut RateLimit) {
        counters.frames += 1;
        let now = Instant::now();
        let message = match codec::decode(frame) {
            Ok(m) => m,
            Err(e) => {
                counters.invalid += 1;
                if let Some(suppressed) = bad.allow(now) {
                    let more = if suppressed > 0 {
                        format!(" ({suppressed} more since the last report)")
                    } else {
                        String::new()
                    };
                    log::warn!(
                        "battery {} ({}): frame not used: {e}{more}",
                        self.index + 1,
                        self.name()
                    );
                }
                self.flush(counters, None);
                return;
            }
        };
        log::trace!("{}: {frame:?}", self.name());
        let Some(telegram) = assembler.push(&message, now) else {
            return;
        };
        let delivery = Delivery {
            input: self.index,
            telegram,
            at: now,
        };
        if let Err(TrySendError::Full(_)) = self.telegrams.try_send(delivery) {
            counters.dropped += 1;
        }
        self.flush(counters, Some((telegram, now)));
    }

    fn flush(&self, counters: &mut Counters, telegram: Option<(Telegram, Instant)>) {
        self.board.input(self.index, |s| {
            s.frames += counters.frames;
            s.invalid += counters.invalid;
            s.dropped += counters.dropped;
            if let Some((t, at)) = telegram {
                s.telegram = Some(t);
                s.last_telegram = Some(at);
                s.last_telegram_wall = Some(SystemTime::now());
                s.telegrams += 1;
            }
        });
        *counters = Counters::default();
    }
}
