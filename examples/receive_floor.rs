//! The floor under the gateway's CPU per input frame on a given machine:
//! what it costs only to *receive* CAN frames, with no decoding, combining
//! or output at all. `bench_floor` in the system tests runs it on the same
//! traffic as `bench_idle` (1 telegram/s per battery) and compares its CPU
//! per frame with the gateway's, so a target below this floor shows up as
//! one that no design of that shape can meet on that machine.
//!
//! Usage: `receive_floor <per-frame|per-burst> SECONDS IFACE...`: one thread
//! per interface (the design card's shape), for SECONDS, then it prints one
//! line per interface (frames, wake-ups) and exits.
//! - `per-frame`: poll(2) and one read per frame, as the gateway's input
//!   threads read (one wake-up per frame).
//! - `per-burst`: wait in poll(2) for a burst's first frame, sleep HOLD, then
//!   take everything queued (two wake-ups per burst, however many frames):
//!   the floor of reading a burst after the fact.

use socketcan::{CanSocket, Socket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Longer than a burst of the system tests' battery simulators (seven
/// frames 3 ms apart), shorter than their period (1 s).
const HOLD: Duration = Duration::from_millis(100);

#[derive(Clone, Copy)]
enum Mode {
    PerFrame,
    PerBurst,
}

#[derive(Default)]
struct Tally {
    frames: u64,
    wakeups: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: receive_floor <per-frame|per-burst> SECONDS IFACE...";
    let mode = match args.first().map(String::as_str) {
        Some("per-frame") => Mode::PerFrame,
        Some("per-burst") => Mode::PerBurst,
        _ => exit_with(usage),
    };
    let secs: f64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| exit_with(usage));
    let ifaces = &args[2..];
    if ifaces.is_empty() {
        exit_with(usage);
    }
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let sockets: Vec<CanSocket> = ifaces
        .iter()
        .map(|i| CanSocket::open(i).unwrap_or_else(|e| exit_with(&format!("{i}: {e}"))))
        .collect();
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let threads: Vec<_> = sockets
            .iter()
            .map(|sock| s.spawn(move || receive(sock.as_raw_fd(), mode, until)))
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a reader panicked"))
            .collect()
    });
    for (iface, t) in ifaces.iter().zip(tallies) {
        println!("{iface}: {} frames, {} wake-ups", t.frames, t.wakeups);
    }
}

fn exit_with(why: &str) -> ! {
    eprintln!("{why}");
    std::process::exit(2)
}

fn receive(fd: RawFd, mode: Mode, until: Instant) -> Tally {
    let mut tally = Tally::default();
    loop {
        let now = Instant::now();
        if now >= until {
            return tally;
        }
        if !readable(fd, until - now) {
            continue;
        }
        tally.wakeups += 1;
        if let Mode::PerBurst = mode {
            std::thread::sleep(HOLD);
            tally.wakeups += 1;
        }
        while take(fd) {
            tally.frames += 1;
            if let Mode::PerFrame = mode {
                break;
            }
        }
    }
}

/// Sleeps in poll(2) until `fd` has something to read or `timeout` passes.
fn readable(fd: RawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

/// Takes one frame if one is queued, without waiting.
fn take(fd: RawFd) -> bool {
    // SAFETY: can_frame is plain old data; all zeroes is a valid value.
    let mut raw: libc::can_frame = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::can_frame>();
    // SAFETY: `raw` is valid for writes of `size` bytes during the call.
    let n = unsafe { libc::recv(fd, (&raw mut raw).cast(), size, libc::MSG_DONTWAIT) };
    n == size as isize
}
