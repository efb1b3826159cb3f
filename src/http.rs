//! The local status server (`[http]`): the status page, `/api/state`,
//! `/api/events`, `/api/history` and `/metrics`, read-only; and POST
//! `/api/record`, which asks the flight recorder for a recording (from this
//! machine only). Its history thread samples the board into the page's
//! 24 h history every 10 s (docs/history.md).
//!
//! Bounded by construction: one acceptor thread hands each connection to one
//! of [`WORKERS`] threads through a queue of [`BACKLOG`]; a connection that
//! finds the queue full is answered 503 without waiting and closed. A
//! request must arrive whole within [`REQUEST_TIME`] and [`MAX_REQUEST`]
//! bytes (408 / 431 otherwise); every answer is written within
//! [`WRITE_TIME`] and the connection closed. The threads only read the
//! status board through `snapshot()`, like MQTT, so a slow or hostile client
//! can at worst keep the page from others for a few seconds, never delay
//! CAN traffic. The request line and headers are parsed by `httparse`;
//! anything but GET and HEAD is refused (405), malformed requests get 400.

pub mod api;
pub mod metrics;

use crate::clock::Clock;
use crate::config::Config;
use crate::events::{Event, Events};
use crate::history;
use crate::loglimit::{LogLimit, Repeats};
use crate::recorder::{Reason, Recorder};
use crate::shutdown::Stop;
use crate::status::{Latest, StatusBoard};
use crate::sync::spawn;
use crate::telemetry::{BatteryPayload, InverterPayload, SystemPayload};
use api::{Refusal, Route, View};
use crossbeam_channel::{Sender, TrySendError, bounded};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Connections served at the same time.
pub const WORKERS: usize = 4;
/// Accepted connections waiting for a worker.
pub const BACKLOG: usize = 16;
/// The largest request (line and headers) read.
pub const MAX_REQUEST: usize = 8 * 1024;
/// The time a client has to send its whole request.
pub const REQUEST_TIME: Duration = Duration::from_secs(2);
/// The time an answer may take to be written.
pub const WRITE_TIME: Duration = Duration::from_secs(2);

/// A bound listener, ready to serve.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
}

/// Binds `addr` (port 0: any free port).
pub fn bind(addr: SocketAddr) -> io::Result<Server> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    Ok(Server { listener, addr })
}

/// The page's address for people: a wildcard address is shown as localhost.
pub fn url(addr: SocketAddr) -> String {
    format!("http://{}/", reachable(addr))
}

/// An address this machine can connect to: the wildcard becomes loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => SocketAddr::from((Ipv4Addr::LOCALHOST, a.port())),
        SocketAddr::V6(a) if a.ip().is_unspecified() => SocketAddr::from((Ipv6Addr::LOCALHOST, a.port())),
        a => a,
    }
}

impl Server {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `config`, `board` and `events` (asking `recorder` for
    /// recordings) until `stop` receives or is disconnected.
    pub fn run(&self, config: &Config, board: &StatusBoard, events: &Events, recorder: &Recorder, stop: &Stop) {
        self.serve(&|f: Show| f(config, board), events, recorder, stop);
    }

    /// Serves the latest configuration and board (the daemon's, which a
    /// reload replaces) until `stop`; `events` and `recorder` stay.
    pub fn run_latest(&self, latest: &Latest, events: &Events, recorder: &Recorder, stop: &Stop) {
        self.serve(
            &|f: Show| {
                let (config, board) = latest.get();
                f(&config, &board)
            },
            events,
            recorder,
            stop,
        );
    }

    fn serve(&self, source: &Source, events: &Events, recorder: &Recorder, stop: &Stop) {
        let stopping = AtomicBool::new(false);
        let (queue_tx, queue_rx) = bounded::<TcpStream>(BACKLOG);
        std::thread::scope(|s| {
            for n in 0..WORKERS {
                let queue = queue_rx.clone();
                let worker = move || {
                    for stream in queue {
                        serve(stream, source, events, recorder);
                    }
                };
                spawn(s, format!("http-{n}"), worker);
            }
            drop(queue_rx);
            let stopping = &stopping;
            let wake = reachable(self.addr);
            // Samples the history at each row until the stop.
            spawn(s, "http-history".into(), move || {
                keep_sampling(source, stop);
                stopping.store(true, Ordering::SeqCst);
                // Wakes the acceptor out of accept().
                let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
            });
            self.accept(&queue_tx, stopping);
            drop(queue_tx);
        });
    }

    fn accept(&self, queue: &Sender<TcpStream>, stopping: &AtomicBool) {
        let mut failures = LogLimit::new(Duration::from_secs(60), Repeats::AnyText);
        for conn in self.listener.incoming() {
            if stopping.load(Ordering::SeqCst) {
                return;
            }
            match conn {
                Ok(stream) => {
                    if let Err(TrySendError::Full(stream)) = queue.try_send(stream) {
                        busy(stream);
                    }
                }
                Err(e) => {
                    let line = format_args!("status server: cannot accept a connection: {e}");
                    if let Some(line) = failures.check(line, Instant::now()) {
                        log::warn!("{line}");
                    }
                    // E.g. out of file descriptors: give the others a moment.
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// Puts the board's values into its history now and at the start of every
/// following row (a little after, so that a late wake-up still lands in
/// its own row), until `stop`. This thread only reads the board, like
/// the page: never a CAN thread's time.
fn keep_sampling(source: &Source, stop: &Stop) {
    loop {
        let now = SystemTime::now();
        source(&mut |config, board| sample_history(config, board, now));
        let into_row = now.duration_since(UNIX_EPOCH).map_or(Duration::ZERO, |d| {
            Duration::from_millis((d.as_millis() % (history::SLOT_S as u128 * 1000)) as u64)
        });
        let next = Duration::from_secs(history::SLOT_S as u64) - into_row + SAMPLE_LATE;
        if stop.sleep(next) {
            return;
        }
    }
}

/// How far into its row a sample is taken.
const SAMPLE_LATE: Duration = Duration::from_millis(500);

/// One sample of `board` at `now` into its history: the values `/api/state`
/// shows.
pub fn sample_history(config: &Config, board: &StatusBoard, now: SystemTime) {
    let snapshot = board.snapshot();
    let view = View {
        config,
        snapshot: &snapshot,
        events: &[],
        clock: Clock::now(),
    };
    let sample = sample_of(&view.system(), &view.batteries(), &view.inverters());
    let unix = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    board.history(|h| h.push(unix, &sample));
}

/// One answer from a configuration and its board.
type Show<'s> = &'s mut dyn FnMut(&Config, &StatusBoard);
/// What the server shows: calls the answer with the configuration and board
/// in effect.
type Source<'s> = dyn Fn(Show) + Sync + 's;

/// Every worker is busy and the queue is full: 503 without waiting.
fn busy(stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
    let answer = Answer::refused(Refusal {
        status: 503,
        reason: "busy: too many connections, try again".into(),
    });
    let _ = (&stream).write(&answer.bytes(false));
}

/// One answer, ready to write.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
    extra: &'static str,
}

impl Answer {
    fn refused(r: Refusal) -> Answer {
        Answer {
            status: r.status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{}\n", r.reason),
            extra: if r.status == 405 { "Allow: GET, HEAD\r\n" } else { "" },
        }
    }

    fn bytes(&self, head: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
             X-Content-Type-Options: nosniff\r\nConnection: close\r\n{}\r\n",
            self.status,
            self.content_type,
            self.body.len(),
            self.extra
        )
        .into_bytes();
        if !head {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// The page may run its own script and talk to this server, nothing else.
const PAGE_POLICY: &str = "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; \
                           style-src 'unsafe-inline'; connect-src 'self'; img-src data:\r\n";

/// Reads one request, answers it and closes the connection.
fn serve(mut stream: TcpStream, source: &Source, events: &Events, recorder: &Recorder) {
    let _ = stream.set_write_timeout(Some(WRITE_TIME));
    let _ = stream.set_nodelay(true);
    let (answer, head) = match read_request(&mut stream) {
        Ok((route, head, marked)) => {
            let mut answered = None;
            source(&mut |config, board| {
                answered = Some(match route {
                    Route::Record => record(&stream, marked, recorder),
                    route => answer(route, config, board, events),
                })
            });
            let head = head && route != Route::Record;
            (answered.expect("the source shows once"), head)
        }
        Err(r) => (Answer::refused(r), false),
    };
    let _ = stream.write_all(&answer.bytes(head));
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// The header `bms-gateway record` sends with POST /api/record. A web page
/// cannot send it to another origin without the server's consent (a CORS
/// preflight this server never grants), so no page a browser opens can ask
/// for recordings and push the real ones out of KEEP.
pub const RECORD_HEADER: &str = "X-Bms-Gateway";

/// POST /api/record: a flight recording, asked for from this machine only.
fn record(stream: &TcpStream, marked: bool, recorder: &Recorder) -> Answer {
    let local = stream.peer_addr().is_ok_and(|a| a.ip().is_loopback());
    let refusal = match (local, marked) {
        (false, _) => "recordings can be asked for from this machine only",
        (true, false) => "POST /api/record needs the header X-Bms-Gateway: record (use bms-gateway record)",
        (true, true) => {
            return match recorder.ask(Reason::Request) {
                Ok(w) => Answer {
                    status: 200,
                    content_type: "application/json",
                    body: serde_json::json!({"file": w.path, "frames": w.frames}).to_string(),
                    extra: "",
                },
                Err(reason) => Answer::refused(Refusal { status: 503, reason }),
            };
        }
    };
    Answer::refused(Refusal {
        status: 403,
        reason: refusal.into(),
    })
}

fn answer(route: Route, config: &Config, board: &StatusBoard, events: &Events) -> Answer {
    let snapshot = board.snapshot();
    let events: Vec<Event> = events.after(0);
    let view = View {
        config,
        snapshot: &snapshot,
        events: &events,
        clock: Clock::now(),
    };
    let json = "application/json";
    match route {
        Route::Page => Answer {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: api::PAGE.to_string(),
            extra: PAGE_POLICY,
        },
        Route::State => Answer {
            status: 200,
            content_type: json,
            body: view.state_json(),
            extra: "",
        },
        Route::Events => Answer {
            status: 200,
            content_type: json,
            body: view.events_json(),
            extra: "",
        },
        Route::Metrics => Answer {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics::render(&view),
            extra: "",
        },
        Route::History { since, step } => Answer {
            status: 200,
            content_type: json,
            body: board.history(|h| h.table(since, step)).json(),
            extra: "",
        },
        Route::Record => unreachable!("served by record()"),
    }
}

/// Reads until the end of the headers, within the size and time limits:
/// the route, whether only the head is wanted, and whether the request has
/// the [`RECORD_HEADER`].
fn read_request(stream: &mut TcpStream) -> Result<(Route, bool, bool), Refusal> {
    let deadline = Instant::now() + REQUEST_TIME;
    let mut buf = [0u8; MAX_REQUEST];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timeout());
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf[len..]) {
            Ok(0) => return Err(bad("the connection closed before the request was complete")),
            Ok(n) => len += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(timeout());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad(&format!("read failed: {e}"))),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let method = request.method.unwrap_or("");
                let path = request.path.unwrap_or("");
                let marked = request
                    .headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case(RECORD_HEADER));
                return api::route(method, path).map(|(route, head)| (route, head, marked));
            }
            Ok(httparse::Status::Partial) if len == buf.len() => {
                return Err(Refusal {
                    status: 431,
                    reason: format!("request too large: at most {MAX_REQUEST} bytes of request line and headers"),
                });
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Refusal {
                    status: 431,
                    reason: "too many headers: at most 32".into(),
                });
            }
            Err(e) => return Err(bad(&format!("malformed request: {e}"))),
        }
    }
}

fn bad(reason: &str) -> Refusal {
    Refusal {
        status: 400,
        reason: reason.to_string(),
    }
}

fn timeout() -> Refusal {
    Refusal {
        status: 408,
        reason: format!("the request did not arrive within {} s", REQUEST_TIME.as_secs()),
    }
}

/// The server thread of the daemon and the demo: binds `[http] LISTEN`
/// and serves until `stop`. A failure to bind is logged and leaves the
/// gateway running without the page.
pub fn run(config: &Config, board: &StatusBoard, events: &Events, recorder: &Recorder, stop: &Stop) {
    run_with(config, stop, |server| server.run(config, board, events, recorder, stop));
}

/// [`run`] for the daemon: serves the latest configuration and board. The
/// address is the one `config` (the first configuration) gives: a reload
/// does not move the server (docs/reload.md).
pub fn run_latest(config: &Config, latest: &Latest, events: &Events, recorder: &Recorder, stop: &Stop) {
    run_with(config, stop, |server| server.run_latest(latest, events, recorder, stop));
}

fn run_with(config: &Config, stop: &Stop, serve: impl FnOnce(&Server)) {
    match bind(config.http.listen) {
        Ok(server) => {
            log::info!("status page on {}", url(server.local_addr()));
            serve(&server);
        }
        Err(e) => {
            log::error!(
                "status server: cannot listen on {}: {e}; the gateway runs without it (change [http] LISTEN \
                 or set [http] ACTIVATED = false)",
                config.http.listen
            );
            let _ = stop.recv();
        }
    }
}

/// The history's sample of the status payloads (the values `/api/state`
/// shows). A battery that is not online is all unknown: a gap, not its last
/// values. Made here, by the thread that reads the board, so that the
/// history itself knows nothing of the front ends' payloads.
pub fn sample_of(
    system: &SystemPayload,
    batteries: &[BatteryPayload],
    inverters: &[InverterPayload],
) -> history::Sample {
    let v = &system.values;
    let l = &system.limits;
    let why = |reason: Option<&'static str>, battery| reason.map(|reason| history::Why { reason, battery });
    history::Sample {
        bank: [v.soc, v.v_avg, v.i_total, v.t_avg, v.i_lim_charge, v.i_lim_discharge],
        why_charge: why(l.limit_reason_charge, l.limit_battery_charge),
        why_discharge: why(l.limit_reason_discharge, l.limit_battery_discharge),
        batteries: (batteries.iter())
            .map(|b| {
                let v = &b.values;
                let values = [v.soc, v.i_total, b.share, v.t_avg, v.v_cell_min, v.v_cell_max];
                if b.online { values } else { [None; 6] }
            })
            .collect(),
        inverters: (inverters.iter())
            .map(|i| [i.values.i_lim_charge, i.values.i_lim_discharge])
            .collect(),
    }
}
