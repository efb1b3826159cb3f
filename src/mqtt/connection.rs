//! The broker connection: client options (client id, credentials, TLS, last
//! will), the thread that drives rumqttc's event loop with reconnect
//! back-off, and log lines that say what went wrong in the user's terms.
//!
//! rumqttc's blocking [`Connection`] must be polled continuously and
//! reconnects at once, with no back-off, on the poll after an error; a poll
//! cut short by a timeout restarts a connect in progress. So it gets a thread
//! of its own that blocks in `recv()` and waits 1, 2, 4 ... 30 s between
//! failed attempts; the MQTT thread proper only sees [`LinkEvent`]s and never
//! waits on the network. The connection thread is detached: after shutdown
//! it may still be inside a connect attempt (up to rumqttc's 5 s timeout)
//! and ends by itself afterwards, holding nothing the rest of the gateway
//! needs.

use crate::config::{Config, TlsConfig};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rumqttc::{
    Client, ConnectReturnCode, Connection, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests rumqttc queues for the broker. Large enough for the discovery
/// burst at connect time; when full, publishes are dropped and counted.
pub const QUEUE_CAPACITY: usize = 1024;

/// Name of the systemd credential holding the password
/// (`LoadCredential=mqtt-password:/path` in the unit).
pub const CREDENTIAL_NAME: &str = "mqtt-password";

/// A connection that lasted this long was healthy: the next failure starts
/// the back-off again at 1 s.
const HEALTHY: Duration = Duration::from_secs(10);

/// The same connection error is logged again at most this often.
const ERROR_REPEAT: Duration = Duration::from_secs(600);

/// What the connection thread tells the MQTT thread.
#[derive(Debug)]
pub enum LinkEvent {
    /// The broker accepted the connection (again): resubscribe, republish.
    Connected,
    /// The connection is gone or could not be made; the thread retries.
    Disconnected,
    /// A message from a subscription.
    Message {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    /// Our DISCONNECT went out: shutdown can finish.
    DisconnectSent,
}

/// "bms-gateway-" and the host name, when CLIENT-ID is not set.
pub fn client_id(config: &Config) -> String {
    config
        .mqtt
        .client_id
        .clone()
        .unwrap_or_else(|| format!("bms-gateway-{}", host_name()))
}

fn host_name() -> String {
    if let Ok(name) = std::fs::read_to_string("/etc/hostname") {
        let name = name.trim();
        if !name.is_empty() {
            return name.to_string();
        }
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match (rc, std::str::from_utf8(&buf[..end])) {
        (0, Ok(name)) if !name.is_empty() => name.to_string(),
        _ => "unknown".into(),
    }
}

/// Where the password comes from: PASSWORD-FILE, else the systemd
/// credential `mqtt-password` when the service has one.
pub fn password_path(config: &Config, credentials_dir: Option<&Path>) -> Option<PathBuf> {
    config.mqtt.password_file.clone().or_else(|| {
        let path = credentials_dir?.join(CREDENTIAL_NAME);
        path.is_file().then_some(path)
    })
}

/// The password file's content without its final line break.
pub fn read_password(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the MQTT password from {}: {e}", path.display()))?;
    Ok(text
        .strip_suffix('\n')
        .unwrap_or(&text)
        .trim_end_matches('\r')
        .to_string())
}

/// Client options for the config: id, keep-alive, last will, credentials
/// and TLS. Files (password, certificates) are read here, and again at
/// every reconnect, so a fixed file is picked up without a restart.
pub fn options(config: &Config) -> Result<MqttOptions, String> {
    let mut o = base_options(config);
    refresh(config, &mut o)?;
    Ok(o)
}

/// Everything but the parts read from files.
fn base_options(config: &Config) -> MqttOptions {
    let m = &config.mqtt;
    let mut o = MqttOptions::new(client_id(config), m.broker.clone(), m.port);
    o.set_keep_alive(Duration::from_secs(30));
    // A new session on every connect: nothing from before an outage is
    // replayed (subscriptions are renewed by the MQTT thread).
    o.set_clean_session(true);
    o.set_max_packet_size(256 * 1024, 256 * 1024);
    o.set_request_channel_capacity(QUEUE_CAPACITY);
    o.set_last_will(LastWill::new(
        format!("{}/status", m.base_topic),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    o
}

/// (Re)reads the password and TLS files into the options.
fn refresh(config: &Config, o: &mut MqttOptions) -> Result<(), String> {
    let m = &config.mqtt;
    if let Some(user) = &m.username {
        let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        let password = match password_path(config, credentials_dir.as_deref()) {
            Some(path) => read_password(&path)?,
            None => String::new(),
        };
        o.set_credentials(user.clone(), password);
    }
    if let Some(tls) = &m.tls {
        let client = tls_client_config(tls)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(client))));
    }
    Ok(())
}

/// A rustls client config with ring as the crypto provider (it cross-compiles
/// to the Raspberry Pi with just the cross gcc that linking needs anyway,
/// where rumqttc's default aws-lc-rs needs cmake and more), the
/// CA from CA-FILE or the system's roots, and the client certificate when
/// CERT-FILE and KEY-FILE are set.
pub fn tls_client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            for cert in read_certs(path, "CA-FILE")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("CA-FILE {}: unusable certificate: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err("TLS: no system CA certificates found; set CA-FILE".into());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let certs = read_certs(cert, "CERT-FILE")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("KEY-FILE {}: no usable private key: {e}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("CERT-FILE/KEY-FILE: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key} {}: no PEM certificate in the file", path.display()));
    }
    Ok(certs)
}

/// A connection error as the user should read it.
pub fn describe(error: &ConnectionError, config: &Config) -> String {
    let m = &config.mqtt;
    let broker = format!("MQTT broker {}:{}", m.broker, m.port);
    match error {
        ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized if m.username.is_none() => {
                    "it requires a user name and password (set USERNAME and PASSWORD-FILE)".to_string()
                }
                ConnectReturnCode::BadUserNamePassword => {
                    "bad user name or password (check USERNAME and PASSWORD-FILE)".to_string()
                }
                ConnectReturnCode::NotAuthorized => {
                    "not authorised: bad user name or password, or this client may not connect \
                     (check USERNAME and PASSWORD-FILE)"
                        .to_string()
                }
                ConnectReturnCode::BadClientId => "client id rejected (check CLIENT-ID)".to_string(),
                ConnectReturnCode::ServiceUnavailable => "service unavailable".to_string(),
                ConnectReturnCode::RefusedProtocolVersion => "MQTT 3.1.1 not supported".to_string(),
                ConnectReturnCode::Success => "refused without a reason".to_string(),
            };
            format!("{broker} refused the connection: {why}")
        }
        ConnectionError::Tls(e) => format!("{broker}: TLS failed: {e} (check TLS, CA-FILE, CERT-FILE, KEY-FILE)"),
        ConnectionError::Io(e) => format!("{broker} unreachable: {e}"),
        ConnectionError::NetworkTimeout => format!("{broker}: no answer within 5 s"),
        ConnectionError::FlushTimeout => format!("{broker}: sending timed out"),
        ConnectionError::MqttState(e) => format!("{broker}: connection lost: {e}"),
        other => format!("{broker}: {other}"),
    }
}

/// Waits between reconnect attempts: 1, 2, 4, 8, 16, 30, 30 ... s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        wait
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// Rate limit for repeated log lines: a line differing from the previous
/// one is logged at once; the same line again at most once per `every`,
/// with the number of repeats left out meanwhile.
#[derive(Debug)]
pub struct Quiet {
    every: Duration,
    last: Option<(String, Instant)>,
    suppressed: u64,
}

impl Quiet {
    pub fn new(every: Duration) -> Quiet {
        Quiet {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// The line to log now, if any.
    pub fn check(&mut self, line: &str, now: Instant) -> Option<String> {
        let repeat = self.last.as_ref().is_some_and(|(l, _)| l == line);
        let due = self
            .last
            .as_ref()
            .is_none_or(|(_, at)| now.saturating_duration_since(*at) >= self.every);
        if repeat && !due {
            self.suppressed += 1;
            return None;
        }
        let out = match (repeat, self.suppressed) {
            (true, n) if n > 0 => format!("{line} (repeated {n} times)"),
            _ => line.to_string(),
        };
        self.last = Some((line.to_string(), now));
        self.suppressed = 0;
        Some(out)
    }
}

/// Rate limit for a kind of log line whatever its text: at most one per
/// `every`, with the number left out meanwhile.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// The line to log now, if any.
    pub fn check(&mut self, line: &str, now: Instant) -> Option<String> {
        if self
            .last
            .is_some_and(|at| now.saturating_duration_since(at) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        let out = match self.suppressed {
            0 => line.to_string(),
            n => format!("{line} ({n} similar lines left out)"),
        };
        self.last = Some(now);
        self.suppressed = 0;
        Some(out)
    }
}

/// Connects once and disconnects: whether the broker takes this
/// configuration's connection (address, login, TLS), for an answer at once
/// (`demo --mqtt`) instead of retries in the log.
pub fn probe(config: &Config, patience: Duration) -> Result<(), String> {
    let (client, mut connection) = Client::new(options(config)?, 8);
    let deadline = Instant::now() + patience;
    loop {
        match connection.recv_timeout(POLL) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) | Err(rumqttc::RecvTimeoutError::Timeout) => {}
            Ok(Err(e)) => return Err(describe(&e, config)),
            Err(rumqttc::RecvTimeoutError::Disconnected) => return Err("the MQTT connection closed".into()),
        }
        if Instant::now() >= deadline {
            let m = &config.mqtt;
            return Err(format!(
                "MQTT broker {}:{}: no answer within {} s",
                m.broker,
                m.port,
                patience.as_secs_f64()
            ));
        }
    }
    if client.try_disconnect().is_ok() {
        closed(&mut connection);
    }
    Ok(())
}

/// How long the broker may take to close the connection after DISCONNECT.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How often a short-lived connection ([`probe`], the removal) is polled.
pub const POLL: Duration = Duration::from_millis(100);

/// Waits (at most [`CLOSE_GRACE`]) until the broker has closed the
/// connection after our DISCONNECT: a connection dropped before the broker
/// read it would make the broker publish the last will ("offline",
/// retained) on BASE/status.
pub fn closed(connection: &mut Connection) {
    let until = Instant::now() + CLOSE_GRACE;
    while Instant::now() < until {
        match connection.recv_timeout(POLL) {
            Ok(Ok(_)) | Err(rumqttc::RecvTimeoutError::Timeout) => {}
            Ok(Err(_)) | Err(rumqttc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Creates the client and starts the connection thread. The thread stops
/// when `stop` receives or is disconnected (checked between polls and
/// during back-off), or when every [`Client`] is dropped.
pub fn start(config: &Config, events: Sender<LinkEvent>, stop: Receiver<()>) -> Result<Client, String> {
    // A file that cannot be read now is reported, and read again, by the
    // connection thread before each attempt.
    let mut opts = base_options(config);
    let needs_refresh = refresh(config, &mut opts).is_err();
    let (client, connection) = Client::new(opts, QUEUE_CAPACITY);
    let config = config.clone();
    std::thread::Builder::new()
        .name("mqtt-connection".into())
        .spawn(move || drive(&config, connection, &events, &stop, needs_refresh))
        .map_err(|e| format!("cannot start the MQTT connection thread: {e}"))?;
    Ok(client)
}

/// Stopping was asked for (or the MQTT thread is gone).
fn stopping(stop: &Receiver<()>) -> bool {
    !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty))
}

/// Waits `d` unless stopped meanwhile; true when stopped.
fn wait_or_stop(stop: &Receiver<()>, d: Duration) -> bool {
    !matches!(stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
}

/// The connection thread's loop: poll, forward, wait after failures.
fn drive(
    config: &Config,
    mut connection: Connection,
    events: &Sender<LinkEvent>,
    stop: &Receiver<()>,
    mut needs_refresh: bool,
) {
    let mut retry = Retry::new(config);
    loop {
        if stopping(stop) {
            return;
        }
        if needs_refresh {
            if let Err(e) = refresh(config, &mut connection.eventloop.mqtt_options) {
                if retry.failed(&e, log::Level::Error, stop) {
                    return;
                }
                continue;
            }
            needs_refresh = false;
        }
        let forward = match connection.recv() {
            // Every client handle is gone: nothing more to send.
            Err(_) => return,
            Ok(Ok(event)) => retry.on_event(event),
            Ok(Err(e)) => {
                if events.send(LinkEvent::Disconnected).is_err() || stopping(stop) {
                    return;
                }
                retry.lost();
                if retry.failed(&describe(&e, config), log::Level::Warn, stop) {
                    return;
                }
                // Whatever was queued while disconnected is dropped, not
                // sent late as if it were current (the MQTT thread
                // republishes current state on the next connect).
                connection.eventloop.clean();
                connection.eventloop.pending.clear();
                needs_refresh = true;
                None
            }
        };
        if let Some(ev) = forward
            && events.send(ev).is_err()
        {
            return;
        }
    }
}

/// The connection thread's memory between attempts: back-off and log
/// rate limits.
struct Retry {
    broker: String,
    backoff: Backoff,
    errors: Quiet,
    connects: Quiet,
    connected_at: Option<Instant>,
}

impl Retry {
    fn new(config: &Config) -> Retry {
        Retry {
            broker: format!("{}:{}", config.mqtt.broker, config.mqtt.port),
            backoff: Backoff::default(),
            errors: Quiet::new(ERROR_REPEAT),
            connects: Quiet::new(Duration::from_secs(60)),
            connected_at: None,
        }
    }

    /// What the MQTT thread must hear of an event, if anything.
    fn on_event(&mut self, event: Event) -> Option<LinkEvent> {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                self.connected_at = Some(Instant::now());
                let line = format!("MQTT connected to {}", self.broker);
                if let Some(line) = self.connects.check(&line, Instant::now()) {
                    log::info!("{line}");
                }
                Some(LinkEvent::Connected)
            }
            Event::Incoming(Packet::Publish(p)) => Some(LinkEvent::Message {
                topic: p.topic,
                payload: p.payload.to_vec(),
                retain: p.retain,
            }),
            Event::Incoming(Packet::SubAck(ack)) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                if refused {
                    log::warn!(
                        "MQTT broker {} refused a subscription: setpoint commands may not arrive (check the broker's ACL)",
                        self.broker
                    );
                }
                None
            }
            Event::Outgoing(Outgoing::Disconnect) => Some(LinkEvent::DisconnectSent),
            _ => None,
        }
    }

    /// The connection was lost (or never made). After a healthy connection
    /// this is a new outage: the back-off starts again and the cause is
    /// logged even if the last outage had the same.
    fn lost(&mut self) {
        if self.connected_at.take().is_some_and(|t| t.elapsed() >= HEALTHY) {
            self.backoff.reset();
            self.errors = Quiet::new(ERROR_REPEAT);
        }
    }

    /// Logs `why` (rate-limited) and waits the back-off; true when stopped
    /// meanwhile.
    fn failed(&mut self, why: &str, level: log::Level, stop: &Receiver<()>) -> bool {
        let wait = self.backoff.next_wait();
        match self.errors.check(why, Instant::now()) {
            Some(line) => log::log!(level, "{line}; retrying in {} s", wait.as_secs()),
            None => log::debug!("{why}; retrying in {} s", wait.as_secs()),
        }
        wait_or_stop(stop, wait)
    }
}

#[cfg(test)]
mod tests;
