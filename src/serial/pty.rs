//! Pseudo-terminals for playing a pack on a "serial port" without hardware
//! (`sim-bms --serial PATH --pty`, the integration tests): the kernel's
//! pty pair, raw, with its slave side linked at a stable path as socat's
//! `link=` does, so that the gateway opens it by path like a USB adapter,
//! and "unplugging" removes it.

use std::ffi::CStr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A pseudo-terminal whose slave side is linked at a path.
pub struct LinkedPty {
    /// The master side: where the pack reads requests and writes answers.
    pub master: serial2::SerialPort,
    /// Held open so that the master never reads EIO while the gateway
    /// closes and reopens its side; also sets the line raw.
    _slave: serial2::SerialPort,
    link: PathBuf,
}

impl LinkedPty {
    /// Opens a pty and links its slave side at `link` (replacing a stale link).
    pub fn create(link: &Path) -> std::io::Result<LinkedPty> {
        let (master, slave_path) = open_master()?;
        // Raw: no echo, no CR to LF (reference §6.3).
        let slave = serial2::SerialPort::open(&slave_path, 115_200)?;
        match std::fs::remove_file(link) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::os::unix::fs::symlink(&slave_path, link)?;
        Ok(LinkedPty {
            master,
            _slave: slave,
            link: link.to_path_buf(),
        })
    }
}

impl Drop for LinkedPty {
    /// Unplugged: the link goes, then both sides close.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
    }
}

/// A new pty master and the path of its slave side.
fn open_master() -> std::io::Result<(serial2::SerialPort, PathBuf)> {
    // SAFETY: plain libc calls on a descriptor this function owns; the
    // name buffer is large enough and NUL-terminated by ptsname_r.
    unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        if libc::grantpt(fd) != 0 || libc::unlockpt(fd) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        let rc = libc::ptsname_r(fd, name.as_mut_ptr(), name.len());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        let path = PathBuf::from(CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned());
        Ok((serial2::SerialPort::from(owned), path))
    }
}
