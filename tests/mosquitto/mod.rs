//! Test helpers around a real Mosquitto broker: a broker started on a free
//! loopback port with a config written into its own temporary directory
//! (anonymous, password file, or TLS with a CA made here with `openssl`),
//! a watching client that records every message, and a logger that keeps
//! log lines for assertions.
//!
//! Each test starts its own broker so that tests run in parallel. A missing
//! `mosquitto` or `openssl` fails the test loudly: `make test` installs them.

#![allow(dead_code)]

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long any condition is waited for: generous, the machine is shared.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Who may connect.
#[derive(Debug, Clone)]
pub enum Auth {
    Anonymous,
    Password { user: String, password: String },
}

/// TLS on the main listener, with files made by [`TestPki`].
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub pki: TestPki,
    pub require_client_cert: bool,
}

/// A running Mosquitto. Killed on drop.
pub struct Broker {
    /// The listener the gateway uses (TLS when configured).
    pub port: u16,
    /// A plain listener for the test's own clients (same as `port` without TLS).
    pub plain_port: u16,
    pub auth: Auth,
    tls: Option<TlsListener>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn require(program: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program} || test -x /usr/sbin/{program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{program} is not installed: run `make deps` (or apt-get install mosquitto mosquitto-clients openssl)"
    );
}

fn mosquitto_binary() -> PathBuf {
    require("mosquitto");
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    "mosquitto".into()
}

impl Broker {
    pub fn start(auth: Auth, tls: Option<TlsListener>) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        if let Auth::Password { user, password } = &auth {
            require("mosquitto_passwd");
            let status = Command::new("mosquitto_passwd")
                .args(["-b", "-c"])
                .arg(dir.path().join("passwd"))
                .args([user, password])
                .status()
                .expect("mosquitto_passwd runs");
            assert!(status.success(), "mosquitto_passwd failed");
        }
        let mut broker = Broker {
            port: 0,
            plain_port: 0,
            auth,
            tls,
            dir,
            child: None,
        };
        // A free port can be taken by a parallel test before Mosquitto
        // binds it: then try other ports.
        for attempt in 1.. {
            broker.port = free_port();
            broker.plain_port = if broker.tls.is_some() { free_port() } else { broker.port };
            broker.write_config();
            match broker.try_spawn() {
                Ok(()) => break,
                Err(log) if log.contains("Address already in use") && attempt < 5 => continue,
                Err(log) => panic!("mosquitto did not start:\n{log}"),
            }
        }
        broker
    }

    fn write_config(&self) {
        let (port, plain_port) = (self.port, self.plain_port);
        let mut conf = String::from("per_listener_settings false\npersistence false\nlog_dest stderr\n");
        conf.push_str("log_type error\nlog_type warning\nlog_type notice\nlog_type information\n");
        // As root, Mosquitto would switch to the `mosquitto` user, which
        // cannot read files in our private temporary directory.
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            conf.push_str("user root\n");
        }
        conf.push_str(&format!("listener {port} 127.0.0.1\n"));
        if let Some(tls) = &self.tls {
            let p = &tls.pki;
            conf.push_str(&format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                p.ca_cert.display(),
                p.server_cert.display(),
                p.server_key.display(),
                tls.require_client_cert
            ));
            conf.push_str(&format!("listener {plain_port} 127.0.0.1\n"));
        }
        match &self.auth {
            Auth::Anonymous => conf.push_str("allow_anonymous true\n"),
            Auth::Password { .. } => conf.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                self.dir.path().join("passwd").display()
            )),
        }
        std::fs::write(self.dir.path().join("mosquitto.conf"), conf).unwrap();
    }

    pub fn anonymous() -> Broker {
        Broker::start(Auth::Anonymous, None)
    }

    /// A broker that accepts only `user` with `password`, without TLS.
    pub fn with_password(user: &str, password: &str) -> Broker {
        let auth = Auth::Password {
            user: user.into(),
            password: password.into(),
        };
        Broker::start(auth, None)
    }

    /// Starts Mosquitto and waits until it listens; its log if it exits.
    fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .unwrap();
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", self.plain_port)).is_err()
            || TcpStream::connect(("127.0.0.1", self.port)).is_err()
        {
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                self.child = None;
                return Err(self.log());
            }
            assert!(Instant::now() < deadline, "mosquitto did not listen:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("mosquitto did not start again:\n{log}");
        }
    }

    /// The broker's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Kills the broker at once (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker without closing anything (SIGSTOP): its sockets take
    /// what clients send, and nothing is read or acknowledged until it dies.
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) };
        }
    }

    /// Starts it again on the same ports (retained messages are gone: no
    /// persistence).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn credentials(&self) -> Option<(String, String)> {
        match &self.auth {
            Auth::Anonymous => None,
            Auth::Password { user, password } => Some((user.clone(), password.clone())),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test CA with a server certificate for 127.0.0.1 and localhost and a
/// client certificate, made with the `openssl` command.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    require("openssl");
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestPki {
    /// Makes a CA named `name` and its certificates in `dir`.
    pub fn make(dir: &Path, name: &str) -> TestPki {
        let f = |s: &str| format!("{name}-{s}");
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj"];
        let subject = format!("/CN=bms-gateway test CA {name}");
        ca.push(&subject);
        ca.extend(ec);
        let (ca_key, ca_cert) = (f("ca.key"), f("ca.pem"));
        ca.extend(["-keyout", &ca_key, "-out", &ca_cert]);
        openssl(dir, &ca);
        for (who, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            let (key, csr, cert, extfile) = (
                f(&format!("{who}.key")),
                f(&format!("{who}.csr")),
                f(&format!("{who}.pem")),
                f(&format!("{who}.ext")),
            );
            std::fs::write(dir.join(&extfile), ext).unwrap();
            let mut req = vec!["req", "-new", "-subj", "/CN=localhost"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr]);
            openssl(dir, &req);
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-days",
                    "2",
                    "-in",
                    &csr,
                    "-CA",
                    &ca_cert,
                    "-CAkey",
                    &ca_key,
                    "-CAcreateserial",
                    "-extfile",
                    &extfile,
                    "-out",
                    &cert,
                ],
            );
        }
        TestPki {
            ca_cert: dir.join(f("ca.pem")),
            server_cert: dir.join(f("server.pem")),
            server_key: dir.join(f("server.key")),
            client_cert: dir.join(f("client.pem")),
            client_key: dir.join(f("client.key")),
        }
    }
}

/// One message as the watcher saw it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub at: Instant,
}

impl Msg {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", self.topic, self.text()))
    }
}

/// A plain client that records every message on its subscription, and
/// resubscribes after a broker restart.
pub struct Watcher {
    client: Client,
    messages: Arc<Mutex<Vec<Msg>>>,
    stop: Arc<AtomicBool>,
}

static WATCHERS: AtomicU32 = AtomicU32::new(0);

fn matches(filter: &str, topic: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    for (i, level) in f.iter().enumerate() {
        match *level {
            "#" => return true,
            "+" if i < t.len() => {}
            l if t.get(i) == Some(&l) => {}
            _ => return false,
        }
    }
    f.len() == t.len()
}

impl Watcher {
    pub fn connect(broker: &Broker, filter: &str) -> Watcher {
        let id = format!(
            "watcher-{}-{}",
            std::process::id(),
            WATCHERS.fetch_add(1, Ordering::Relaxed)
        );
        let mut o = MqttOptions::new(id, "127.0.0.1", broker.plain_port);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, password)) = broker.credentials() {
            o.set_credentials(user, password);
        }
        let (client, mut connection) = Client::new(o, 256);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (subscribed_tx, subscribed_rx) = crossbeam_channel::bounded(1);
        {
            let (client, messages, stop, filter) = (client.clone(), messages.clone(), stop.clone(), filter.to_string());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match connection.recv_timeout(Duration::from_secs(10)) {
                        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                            let _ = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce);
                        }
                        Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                            let _ = subscribed_tx.try_send(());
                        }
                        Ok(Ok(Event::Incoming(Packet::Publish(p)))) => messages.lock().unwrap().push(Msg {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            at: Instant::now(),
                        }),
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) => std::thread::sleep(Duration::from_millis(200)),
                        Err(rumqttc::RecvTimeoutError::Timeout) => {}
                        Err(rumqttc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            });
        }
        subscribed_rx.recv_timeout(PATIENCE).expect("the watcher subscribed");
        Watcher { client, messages, stop }
    }

    /// Every message so far on topics matching `filter`.
    pub fn all(&self, filter: &str) -> Vec<Msg> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| matches(filter, &m.topic))
            .cloned()
            .collect()
    }

    /// Waits for the first message on `filter` (after the `skip` first ones)
    /// that satisfies `pred`.
    pub fn wait_for(&self, filter: &str, what: &str, pred: impl Fn(&Msg) -> bool) -> Msg {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(m) = self.all(filter).into_iter().find(|m| pred(m)) {
                return m;
            }
            assert!(Instant::now() < deadline, "no message on {filter}: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the `n`th message (1-based) on `filter`.
    pub fn wait_nth(&self, filter: &str, n: usize) -> Msg {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(m) = self.all(filter).get(n - 1) {
                return m.clone();
            }
            assert!(
                Instant::now() < deadline,
                "message {n} on {filter} did not come; got {:?}",
                self.all(filter).iter().map(Msg::text).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .expect("the watcher publishes");
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.try_disconnect();
    }
}

/// Log lines kept for assertions (info and above; rumqttc's debug output
/// is left out).
pub struct Capture {
    lines: Mutex<Vec<String>>,
}

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }

    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            self.lines.lock().unwrap().push(format!("{} {}", r.level(), r.args()));
        }
    }

    fn flush(&self) {}
}

/// The process-wide capturing logger (installed on first use).
pub fn logs() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::new(Capture {
            lines: Mutex::new(Vec::new()),
        }));
        let _ = log::set_logger(capture);
        log::set_max_level(log::LevelFilter::Info);
        capture
    })
}

impl Capture {
    /// Lines containing every one of `parts`.
    pub fn matching(&self, parts: &[&str]) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .cloned()
            .collect()
    }

    pub fn wait_for(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(l) = self.matching(parts).into_iter().next() {
                return l;
            }
            assert!(Instant::now() < deadline, "no log line with {parts:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A loopback TCP relay to a broker whose connections the test can cut
/// abruptly, as a dying network or process would (no DISCONNECT).
pub struct Proxy {
    pub port: u16,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accepting: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(Mutex::new(Vec::new()));
        let accepting = Arc::new(AtomicBool::new(true));
        let (o, a) = (open.clone(), accepting.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !a.load(Ordering::Relaxed) {
                    continue; // dropped: the connection is refused by closing it
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let pairs = [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ];
                o.lock().unwrap().extend([client, server]);
                for (mut from, mut to) in pairs {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, open, accepting }
    }

    /// Cuts every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.accepting.store(false, Ordering::Relaxed);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Relays new connections again.
    pub fn resume(&self) {
        self.accepting.store(true, Ordering::Relaxed);
    }
}
