//! Real serial ports (USB adapters, UARTs, pseudo-terminals) through the
//! `serial2` crate: raw 8N1 at the configured speed, blocking reads with a
//! timeout, and the kernel's RS485 mode when `RS485-MODE` asks for it
//! (docs/rs485.md, "The serial crate").

use super::{LineSettings, SerialError, SerialOpener, SerialPort};
use serial2::rs4xx::{Rs485Config, TransceiverMode};
use std::io::ErrorKind;
use std::time::{Duration, Instant};

/// Opens real ports.
#[derive(Debug, Clone, Copy, Default)]
pub struct Devices;

impl SerialOpener for Devices {
    fn open(&self, path: &str, line: LineSettings) -> Result<Box<dyn SerialPort>, SerialError> {
        let eight_n_one = |mut s: serial2::Settings| {
            s.set_raw();
            s.set_baud_rate(line.baud)?;
            s.set_char_size(serial2::CharSize::Bits8);
            s.set_stop_bits(serial2::StopBits::One);
            s.set_parity(serial2::Parity::None);
            s.set_flow_control(serial2::FlowControl::None);
            Ok(s)
        };
        let port = serial2::SerialPort::open(path, eight_n_one).map_err(|e| SerialError(format!("{path}: {e}")))?;
        if line.rs485_mode {
            // Asked for: a failure (a driver without RS485 support) is an
            // error to see, not something to ignore (reference §6.2).
            port.set_rs4xx_mode(TransceiverMode::Rs485(Rs485Config::new()))
                .map_err(|e| SerialError(format!("{path}: RS485-MODE: {e}")))?;
        }
        Ok(Box::new(Device { port }))
    }
}

/// One open port.
pub struct Device {
    port: serial2::SerialPort,
}

impl Device {
    /// A port opened elsewhere (a pseudo-terminal's master side).
    pub fn from_port(port: serial2::SerialPort) -> Device {
        Device { port }
    }
}

impl SerialPort for Device {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), SerialError> {
        Ok(self.port.write_all(bytes)?)
    }

    fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, SerialError> {
        let wait = deadline.saturating_duration_since(Instant::now());
        // serial2 waits in poll(2) with millisecond resolution; 0 ms would
        // not wait at all, so round a short remainder up.
        self.port.set_read_timeout(wait.max(Duration::from_millis(1)))?;
        match self.port.read(buf) {
            Ok(0) => Err(SerialError("the port is gone (end of file)".into())),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == ErrorKind::TimedOut => Ok(0),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    fn discard_input(&mut self) -> Result<(), SerialError> {
        Ok(self.port.discard_input_buffer()?)
    }
}
