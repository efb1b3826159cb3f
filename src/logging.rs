//! Logging for the whole process: env_logger, in the journal's format when
//! stderr is journald's stream. Under journald (`JOURNAL_STREAM` names our
//! stderr) every line is written as `<N>message`, where `N` is the syslog
//! priority, so journald keeps the level and adds its own timestamp; on a
//! terminal or in a file the line carries a timestamp, level and module.

use std::io::Write;

use log::Level;

/// The crate's own module prefix: `-v` raises it to debug without also
/// turning on the libraries' debug output (rumqttc logs every packet).
const OWN_CRATE: &str = "bms_gateway";

/// Sets up env_logger for the whole process. Call once, early in `main`.
///
/// The filter is `RUST_LOG` when set (default `info`); `verbose` (`-v`) adds
/// `bms_gateway=debug` on top. A second call is harmless (it is ignored).
pub fn init_logging(verbose: bool) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&filter_spec(rust_log.as_deref(), verbose));
    if stderr_is_journal() {
        // journald stamps every line itself; a second timestamp and the level
        // word would only be noise. The `<N>` prefix is parsed by journald
        // into PRIORITY=, so `journalctl -p warning` keeps working.
        builder.format(|buf, record| {
            let line = journal_line(record.level(), &record.args().to_string());
            buf.write_all(line.as_bytes())
        });
    } else {
        builder
            .format_timestamp_millis()
            .format_module_path(false)
            .format_level(true);
    }
    let _ = builder.try_init();
}

/// The env_logger filter directives for `RUST_LOG` (if set) and `-v`.
fn filter_spec(rust_log: Option<&str>, verbose: bool) -> String {
    let base = rust_log.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("info");
    if verbose {
        // A later directive for the same module replaces an earlier one.
        format!("{base},{OWN_CRATE}=debug")
    } else {
        base.to_string()
    }
}

/// Syslog priority for a log level, as journald reads it from `<N>`.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// One record as journald wants it on a stream: every line of a multi-line
/// message gets the prefix, or journald would log the continuation lines at
/// the default priority (info).
fn journal_line(level: Level, message: &str) -> String {
    let prefix = format!("<{}>", syslog_priority(level));
    let mut out = String::with_capacity(message.len() + 8);
    for line in message.split('\n') {
        out.push_str(&prefix);
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// True when stderr is the stream journald gave us. systemd sets
/// `JOURNAL_STREAM=<device>:<inode>` of that stream; comparing it with
/// stderr's own device and inode (as sd_journal_stream_fd(3) recommends)
/// avoids the journal format when stderr was redirected, e.g. when an
/// operator runs `bms-gateway check` from a shell inside a service.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = parse_journal_stream(&value.to_string_lossy()) else {
        return false;
    };
    match stderr_dev_ino() {
        Some((d, i)) => d == dev && i == ino,
        // Cannot tell: trust the variable, which only systemd sets.
        None => true,
    }
}

fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

fn stderr_dev_ino() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_have_a_prefix_and_no_timestamp() {
        assert_eq!(journal_line(Level::Warn, "can0: bus-off"), "<4>can0: bus-off\n");
        assert_eq!(
            journal_line(Level::Error, "bad config\n  line 3"),
            "<3>bad config\n<3>  line 3\n"
        );
    }

    #[test]
    fn filter_spec_honours_rust_log_and_verbose() {
        assert_eq!(filter_spec(None, false), "info");
        assert_eq!(filter_spec(Some("  "), false), "info");
        assert_eq!(filter_spec(None, true), "info,bms_gateway=debug");
        assert_eq!(filter_spec(Some("warn"), false), "warn");
        assert_eq!(filter_spec(Some("warn"), true), "warn,bms_gateway=debug");
    }

    #[test]
    fn journal_stream_parsing() {
        assert_eq!(parse_journal_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_journal_stream("8:12345\n"), Some((8, 12345)));
        assert_eq!(parse_journal_stream("garbage"), None);
        assert_eq!(parse_journal_stream("8:x"), None);
    }

    /// Environment marker: set only in the child that `logging_formats`
    /// starts.
    const CHILD_MARK: &str = "BMS_LOGGING_TEST_CHILD";

    /// Logs a few records after `init_logging`, in a child process only (the
    /// logger is global); `logging_formats` reads its stderr.
    #[test]
    fn logging_child() {
        if std::env::var_os(CHILD_MARK).is_none() {
            return;
        }
        init_logging(std::env::var_os("CHILD_VERBOSE").is_some());
        log::error!("boom\nsecond line");
        log::warn!("careful");
        log::info!("hello");
        log::debug!("details");
    }

    /// Runs `logging_child` with stderr going to a file; `journal` sets
    /// JOURNAL_STREAM to that file's device and inode, as systemd does for
    /// the stream it connects to journald.
    fn run_logging_child(journal: bool, verbose: bool) -> String {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stderr");
        let file = std::fs::File::create(&path).unwrap();
        let meta = file.metadata().unwrap();
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "logging::tests::logging_child", "--nocapture"])
            .env(CHILD_MARK, "1")
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .stdout(std::process::Stdio::null())
            .stderr(file);
        if journal {
            cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        if verbose {
            cmd.env("CHILD_VERBOSE", "1");
        }
        assert!(cmd.status().unwrap().success());
        std::fs::read_to_string(&path).unwrap()
    }

    #[test]
    fn logging_formats() {
        // Under journald: priority prefixes, no timestamps, no level words.
        assert_eq!(
            run_logging_child(true, false),
            "<3>boom\n<3>second line\n<4>careful\n<6>hello\n"
        );
        assert!(run_logging_child(true, true).ends_with("<6>hello\n<7>details\n"));
        // On a terminal (or a file without JOURNAL_STREAM): timestamp, level
        // and module, e.g. "[2026-11-24T03:00:00.123Z INFO  bms_gateway::...] hello".
        let plain = run_logging_child(false, false);
        let hello = plain.lines().find(|l| l.ends_with("hello")).unwrap();
        assert!(hello.starts_with('['), "{plain}");
        assert!(hello.contains("Z INFO "), "{plain}");
        assert!(hello.contains("bms_gateway::logging::tests]"), "{plain}");
        assert!(!plain.contains("details"), "{plain}");
        assert!(!plain.contains('<'), "{plain}");
    }
}
