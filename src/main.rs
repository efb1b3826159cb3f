//! The `bms-gateway` command line: parses arguments, maps every outcome to
//! an exit code in one place, and hands over to the library.

use bms_gateway::can::CanOpener;
use bms_gateway::can::socket::SocketCan;
use bms_gateway::config::{self, Config, ConfigError, ConfigErrorKind};
use bms_gateway::demo::{self, DemoMqtt, DemoOptions};
use bms_gateway::{daemon, decode, logging, signals, status_client, tools};
use clap::{Parser, Subcommand};
use std::io::{self, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Exit codes, all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Success = 0,
    /// Something failed while running.
    Runtime = 1,
    /// Bad usage or configuration.
    Usage = 2,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Combines several Pylontech-protocol battery BMSes (one CAN interface each)
/// into one virtual battery and shows each inverter a virtual BMS.
#[derive(Debug, Parser)]
#[command(name = "bms-gateway", version, about, long_about = None)]
struct Cli {
    /// Configuration file (default: $BMS_GATEWAY_CONFIG, then
    /// ~/.bms_gateway/bms_config.toml, then /etc/bms-gateway/bms_config.toml).
    /// `scan --config`, without a file, prints a configuration instead.
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE", num_args = 0..=1, default_missing_value = PRINT_CONFIG)]
    config: Option<PathBuf>,
    /// Debug logging (RUST_LOG is honoured too).
    #[arg(short = 'v', long = "verbose", global = true)]
    verbose: bool,
    /// Write the commented configuration template and exit.
    #[arg(long)]
    init: bool,
    /// With --init: overwrite an existing file.
    #[arg(long, requires = "init")]
    force: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration and print the effective settings.
    Check,
    /// The whole gateway on virtual CAN buses (and, from 3 batteries, one
    /// in-process RS485 link) with simulated batteries and inverters: no
    /// hardware, no configuration.
    Demo {
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=16))]
        batteries: u8,
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=8))]
        inverters: u8,
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        #[command(flatten)]
        mqtt: DemoMqttArgs,
    },
    /// Decode a candump log (candump -l files or candump's screen output)
    /// into one JSON object per line; with --rs485, a log of Pylontech
    /// RS485 frames.
    Decode {
        /// The log file, or - for standard input.
        #[arg(default_value = "-")]
        file: String,
        /// The log holds RS485 frames: one per line, ASCII from `~` to the
        /// last checksum digit, the CR optional (CR LF or LF line ends);
        /// blank lines are skipped, any other line is reported with its
        /// number. An answer is decoded as answering the request before it.
        #[arg(long)]
        rs485: bool,
        /// With --rs485: the packs' dialect (pylon, seplos or pace).
        #[arg(long, requires = "rs485", value_name = "P", value_parser = ["pylon", "seplos", "pace"])]
        protocol: Option<String>,
    },
    /// Play a Pylontech battery on a CAN interface, or (--serial) an RS485
    /// pack on a serial port.
    SimBms(tools::SimBmsArgs),
    /// Play an inverter: send 0x305 and print the frames received, decoded.
    SimInverter(tools::SimInverterArgs),
    /// The running gateway's state as a table, from its status server.
    Status {
        /// The status server (default: [http] LISTEN of the configuration,
        /// else http://127.0.0.1:8080/).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Ask the running gateway for a flight recording of the last
    /// [recorder] SECONDS (through its status server) and print the file.
    Record {
        /// The status server (default: [http] LISTEN of the configuration,
        /// else http://127.0.0.1:8080/).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Which CAN interface is which: lists every CAN interface, listens on
    /// those that are up and says what talks there (battery, inverter, both,
    /// nothing); probes the serial ports of /dev/serial/by-id for RS485
    /// packs. With --config: prints a configuration to start from.
    Scan {
        /// How long to listen, s.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Run candump -l logs through the gateway's core in virtual time (inputs
    /// matched to [[bmses-in]] by CAN-IF) and print what each inverter would
    /// have been sent, when.
    Replay {
        /// candump -l files (several, or one with several interfaces).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "candump")]
        output: bms_gateway::replay::Format,
        /// A system-wide setpoint at T s after the first frame: T:KIND:VALUE[:TTL],
        /// KIND charge or discharge, VALUE and TTL in A and s. Repeatable.
        #[arg(long, value_name = "T:KIND:VALUE[:TTL]")]
        setpoint: Vec<bms_gateway::replay::SetpointAt>,
        /// Print each transmission when it is due, at N times the log's pace
        /// (1 = as it happened); the output is the same as without it.
        #[arg(long, value_name = "N", value_parser = parse_speed, conflicts_with = "virtual_time")]
        speed: Option<f64>,
        /// Print everything at once, in virtual time (the default).
        #[arg(long = "virtual")]
        virtual_time: bool,
    },
    /// The link helper (spec 17), run by systemd for one connection on its
    /// socket (bms-gateway-link-helper.socket, Accept=yes): takes a
    /// configured CAN interface down and up for the gateway's user. Needs
    /// CAP_NET_ADMIN; the gateway itself never runs this.
    LinkHelper {
        /// The only user whose requests are served.
        #[arg(long, default_value = "bms-gateway")]
        user: String,
    },
    /// Live decoded view of Pylontech traffic on an interface.
    Monitor {
        /// The CAN interface, e.g. can0.
        interface: String,
    },
}

/// `demo --mqtt ...`: publish the demo to a broker, Home Assistant
/// discovery included, under the base topic bms_gateway_demo.
#[derive(Debug, clap::Args)]
struct DemoMqttArgs {
    /// Also publish to this MQTT broker (HOST or HOST:PORT, default port 1883).
    #[arg(long, value_name = "HOST[:PORT]")]
    mqtt: Option<String>,
    /// The broker's user name.
    #[arg(long, requires = "mqtt")]
    username: Option<String>,
    /// A file holding the broker password (never on the command line).
    #[arg(long, value_name = "FILE", requires = "username")]
    password_file: Option<PathBuf>,
    /// Accept current setpoints (Home Assistant's number entities).
    #[arg(long, requires = "mqtt")]
    control: bool,
    /// Delete what a demo left on the broker (its Home Assistant entities,
    /// status and setpoints) and exit.
    #[arg(long, requires = "mqtt")]
    remove: bool,
}

impl DemoMqttArgs {
    fn options(&self) -> Result<Option<DemoMqtt>, String> {
        let Some(broker) = &self.mqtt else {
            return Ok(None);
        };
        let (broker, port) = DemoMqtt::parse_broker(broker)?;
        Ok(Some(DemoMqtt {
            broker,
            port,
            username: self.username.clone(),
            password_file: self.password_file.clone(),
            control: self.control,
        }))
    }
}

/// The configuration file to use, by the lookup order of the original gateway.
fn config_path(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(p) = explicit {
        return p;
    }
    if let Some(p) = std::env::var_os("BMS_GATEWAY_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = Path::new(&home).join(".bms_gateway/bms_config.toml");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("/etc/bms-gateway/bms_config.toml")
}

fn load(path: &Path) -> Result<Config, Exit> {
    config::load(path).map_err(|e: ConfigError| {
        eprintln!("error: {e}");
        if e.kind == ConfigErrorKind::Unreadable {
            eprintln!(
                "hint: write a commented template with: bms-gateway --init -c {}",
                path.display()
            );
        }
        Exit::Usage
    })
}

fn init(path: &Path, force: bool) -> Exit {
    if path.exists() && !force {
        eprintln!(
            "error: {} exists; not overwriting it (add --force to replace it)",
            path.display()
        );
        return Exit::Usage;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("error: cannot create {}: {e}", dir.display());
        return Exit::Runtime;
    }
    match std::fs::write(path, config::TEMPLATE) {
        Ok(()) => {
            println!(
                "wrote {}: edit the interfaces, set GATEWAY-ACTIVATED = true, then run: bms-gateway check -c {}",
                path.display(),
                path.display()
            );
            Exit::Success
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", path.display());
            Exit::Runtime
        }
    }
}

fn check(path: &Path) -> Exit {
    let config = match load(path) {
        Ok(c) => c,
        Err(e) => return e,
    };
    println!("{}: valid\n", path.display());
    print!("{}", config.describe());
    for w in config.warnings() {
        println!("warning: {w}");
    }
    if !config.gateway_activated {
        println!("note: GATEWAY-ACTIVATED is false: the gateway will not run until it is set to true");
    }
    Exit::Success
}

/// `link-helper`: the interfaces the configuration names, for the user
/// `user`, one request on standard input.
fn link_helper(path: &Path, user: &str) -> Exit {
    use bms_gateway::can::bounce::Bounceable;
    let config = match load(path) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let interfaces: Vec<String> = config
        .inputs
        .iter()
        .map(|i| i.can_if.clone())
        .chain(config.outputs.iter().map(|o| o.can_if.clone()))
        .collect();
    // With RECOVER = "off" the gateway never asks: the helper then bounces nothing.
    let allowed = match config.can.mode {
        bms_gateway::dead_link::RecoverMode::Bounce => Bounceable::These(&interfaces),
        bms_gateway::dead_link::RecoverMode::Off => Bounceable::Nothing,
    };
    let served =
        bms_gateway::can::bounce::user_id(user).and_then(|uid| bms_gateway::can::bounce::serve_helper(uid, allowed));
    outcome(served.map_err(|e| format!("link helper: {e}")))
}

fn run(path: &Path) -> Exit {
    let config = match load(path) {
        Ok(c) => c,
        Err(e) => return e,
    };
    if !config.gateway_activated {
        log::error!(
            "GATEWAY-ACTIVATED is false in {}: edit the file, set it to true, and start again",
            path.display()
        );
        return Exit::Usage;
    }
    for w in config.warnings() {
        log::warn!("{w}");
    }
    match daemon::run(path, config) {
        Ok(()) => Exit::Success,
        Err(e) => {
            log::error!("{e}");
            Exit::Runtime
        }
    }
}

fn demo(batteries: u8, inverters: u8, duration: Option<f64>, mqtt: &DemoMqttArgs) -> Exit {
    let mqtt_options = match mqtt.options() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Usage;
        }
    };
    if mqtt.remove {
        let m = mqtt_options.expect("--remove requires --mqtt");
        return match demo::remove(&m) {
            Ok(n) => {
                println!(
                    "removed {n} retained messages of the demo ({}) from {}:{}; Home Assistant drops its entities",
                    demo::DEMO_BASE_TOPIC,
                    m.broker,
                    m.port
                );
                Exit::Success
            }
            Err(e) => {
                eprintln!("error: {e}");
                Exit::Runtime
            }
        };
    }
    let duration = match duration {
        Some(d) if !(d.is_finite() && d > 0.0) => {
            eprintln!("error: --duration must be a positive number of seconds");
            return Exit::Usage;
        }
        d => d.map(Duration::from_secs_f64),
    };
    let (signals, handle) = match signals::listen() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            return Exit::Runtime;
        }
    };
    let options = DemoOptions {
        batteries: usize::from(batteries),
        inverters: usize::from(inverters),
        duration,
        mqtt: mqtt_options,
    };
    let result = demo::run(options, &signals);
    handle.close();
    match result {
        Ok(()) => Exit::Success,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Runtime
        }
    }
}

/// How `decode` reads its log.
#[derive(Clone, Copy)]
enum LogKind {
    Candump,
    Rs485(bms_gateway::rs485::Protocol),
}

fn decode_file(file: &str, kind: LogKind) -> Exit {
    let stdout = io::stdout().lock();
    let input: Box<dyn io::BufRead> = if file == "-" {
        Box::new(io::stdin().lock())
    } else {
        match std::fs::File::open(file) {
            Ok(f) => Box::new(BufReader::new(f)),
            Err(e) => {
                eprintln!("error: cannot open {file}: {e}");
                return Exit::Usage;
            }
        }
    };
    let result = match kind {
        LogKind::Candump => decode::run(input, stdout),
        LogKind::Rs485(protocol) => decode::rs485::run(input, stdout, protocol).inspect(|&bad| {
            if bad > 0 {
                eprintln!("decode: {bad} bad line(s), each reported with its line number");
            }
        }),
    };
    match result {
        Ok(_) => Exit::Success,
        // A closed pipe (decode ... | head) is not a failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Exit::Success,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Runtime
        }
    }
}

/// The status server's URL: `--url`, else the configuration's LISTEN.
fn server_url(path: &Path, url: Option<String>) -> String {
    url.unwrap_or_else(|| {
        let listen = config::load(path).map_or(config::HttpConfig::default().listen, |c| c.http.listen);
        bms_gateway::http::url(listen)
    })
}

/// `record [--url URL]`: the file the running gateway wrote.
fn record(path: &Path, url: Option<String>) -> Exit {
    match status_client::record(&server_url(path, url)) {
        Ok((file, frames)) => {
            println!("{file} ({frames} frames)");
            Exit::Success
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Runtime
        }
    }
}

fn status(path: &Path, url: Option<String>) -> Exit {
    let url = server_url(path, url);
    let body = match status_client::fetch(&url) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Runtime;
        }
    };
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(state) => {
            print!("{}", status_client::table(&state));
            Exit::Success
        }
        Err(e) => {
            eprintln!("error: {url} did not answer JSON: {e}");
            Exit::Runtime
        }
    }
}

/// What clap puts in `config` for a --config without a file.
const PRINT_CONFIG: &str = "-";

/// `scan [--seconds N] [--config]`: `print_config` is the global --config
/// given without a file.
fn scan(seconds: f64, config: Option<&Path>) -> Exit {
    let print_config = match config {
        None => false,
        Some(p) if p == Path::new(PRINT_CONFIG) => true,
        Some(p) => {
            eprintln!(
                "error: scan --config takes no file; redirect its output: bms-gateway scan --config > {}",
                p.display()
            );
            return Exit::Usage;
        }
    };
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        eprintln!("error: --seconds must be a number of seconds between 0 and 3600");
        return Exit::Usage;
    }
    let duration = Duration::from_secs_f64(seconds);
    let findings = bms_gateway::scan::scan(&SocketCan, Path::new("/sys/class/net"), duration);
    use bms_gateway::scan::serial as rs485;
    let ports: Vec<_> = rs485::serial_ports(Path::new("/dev/serial/by-id"))
        .into_iter()
        .map(|port| {
            let found = rs485::probe(&bms_gateway::serial::device::Devices, &port);
            (port, found)
        })
        .collect();
    let report = format!(
        "{}{}",
        bms_gateway::scan::report(&findings, duration),
        rs485::report(&ports)
    );
    if print_config {
        eprint!("{report}");
        let packs: Vec<_> = ports.into_iter().filter_map(|(_, f)| f.ok()).flatten().collect();
        print!(
            "{}{}",
            bms_gateway::scan::config_text(&findings),
            rs485::config_text(&packs)
        );
    } else {
        print!("{report}");
    }
    Exit::Success
}

/// `replay --speed N`: a factor from 0.001 to 1000.
fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(n) if (0.001..=1000.0).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a speed: give a number from 0.001 to 1000 (1 = as fast as the log)"
        )),
    }
}

fn replay(
    path: &Path,
    files: &[PathBuf],
    format: bms_gateway::replay::Format,
    setpoints: &[bms_gateway::replay::SetpointAt],
    pace: bms_gateway::replay::Pace,
) -> Exit {
    let config = match load(path) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut contents = Vec::new();
    for f in files {
        match std::fs::read(f) {
            Ok(bytes) => contents.push((f.display().to_string(), bytes)),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", f.display());
                return Exit::Usage;
            }
        }
    }
    let sources: Vec<bms_gateway::replay::Source> = contents
        .iter()
        .map(|(name, bytes)| bms_gateway::replay::Source { name, bytes })
        .collect();
    let mut stdout = io::BufWriter::new(io::stdout().lock());
    let result = bms_gateway::replay::run_paced(&config, &sources, setpoints, format, pace, &mut stdout)
        .and_then(|s| io::Write::flush(&mut stdout).map(|()| s));
    match result {
        Ok(summary) => {
            const SHOWN: usize = 50;
            for p in summary.problems.iter().take(SHOWN) {
                eprintln!("{p}");
            }
            if summary.problems.len() > SHOWN {
                eprintln!("... and {} more lines not used", summary.problems.len() - SHOWN);
            }
            eprintln!("{summary}");
            Exit::Success
        }
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Exit::Success,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Runtime
        }
    }
}

fn outcome(result: Result<(), String>) -> Exit {
    match result {
        Ok(()) => Exit::Success,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Runtime
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's live table owns the terminal; its log lines would scroll it
    // away. Piped (or with -v or RUST_LOG) it logs as usual.
    let quiet_demo = matches!(cli.command, Some(Command::Demo { .. })) && io::stdout().is_terminal();
    if quiet_demo && !cli.verbose && std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: single-threaded here, before any thread is started.
        unsafe { std::env::set_var("RUST_LOG", "off") };
    }
    logging::init_logging(cli.verbose);
    if let Some(Command::Scan { seconds }) = cli.command {
        return scan(seconds, cli.config.as_deref()).into();
    }
    if cli.config.as_ref().is_some_and(|p| p == Path::new(PRINT_CONFIG)) {
        eprintln!("error: -c/--config needs a FILE");
        return Exit::Usage.into();
    }
    let path = config_path(cli.config);
    let opener: &dyn CanOpener = &SocketCan;
    let exit = match cli.command {
        None if cli.init => init(&path, cli.force),
        None => run(&path),
        Some(Command::Check) => check(&path),
        Some(Command::Demo {
            batteries,
            inverters,
            duration,
            mqtt,
        }) => demo(batteries, inverters, duration, &mqtt),
        Some(Command::Decode { file, rs485, protocol }) => {
            let kind = match protocol.as_deref().and_then(bms_gateway::rs485::Protocol::from_name) {
                _ if !rs485 => LogKind::Candump,
                Some(p) => LogKind::Rs485(p),
                None => LogKind::Rs485(bms_gateway::rs485::Protocol::Pylon),
            };
            decode_file(&file, kind)
        }
        Some(Command::SimBms(args)) => outcome(tools::sim_bms(opener, &args)),
        Some(Command::SimInverter(args)) => outcome(tools::sim_inverter(opener, &args)),
        Some(Command::Status { url }) => status(&path, url),
        Some(Command::Record { url }) => record(&path, url),
        Some(Command::Scan { .. }) => unreachable!("handled above"),
        Some(Command::Replay {
            files,
            output,
            setpoint,
            speed,
            virtual_time: _,
        }) => {
            let pace = speed.map_or(bms_gateway::replay::Pace::Virtual, bms_gateway::replay::Pace::Speed);
            replay(&path, &files, output, &setpoint, pace)
        }
        Some(Command::Monitor { interface }) => outcome(tools::monitor(opener, &interface)),
        Some(Command::LinkHelper { user }) => link_helper(&path, &user),
    };
    exit.into()
}
