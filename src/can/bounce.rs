//! Taking a CAN link down and up again (spec 17), with the least privilege
//! that can do it. docs/dead-interfaces.md says why it is done this way.
//!
//! The gateway tries, in order:
//! 1. itself, over rtnetlink (the `socketcan` crate), when it holds
//!    CAP_NET_ADMIN (run as root, e.g. in the system-test VM);
//! 2. the link helper ([`serve_helper`], `bms-gateway link-helper`): a
//!    one-request-per-connection service, socket-activated by systemd, the
//!    only place holding CAP_NET_ADMIN. It takes exactly one request,
//!    `bounce IFNAME`, only from the gateway's user (SO_PEERCRED) and only
//!    for an interface in the gateway's configuration, which must say
//!    `RECOVER = "bounce"`;
//! 3. nobody: the caller tells the owner what is wrong and the command.
//!
//! Down and up keeps the device's settings (bit rate, restart-ms,
//! txqueuelen): it changes the IFF_UP flag only.

use super::{BounceError, Bounced};
use socketcan::nl::CanInterface;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Where the packaged link helper listens (its `.socket` unit).
pub const HELPER_SOCKET: &str = "/run/bms-gateway-link-helper.sock";

/// How long the gateway waits for the helper's answer: down and up take
/// milliseconds; this bounds a hung helper, never a normal one.
const HELPER_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest request line the helper reads ("bounce " + IFNAMSIZ).
const MAX_REQUEST: u64 = 64;

/// Takes `interface` down and up: directly, else through the helper at
/// `helper`.
pub fn bounce(interface: &str, helper: &Path) -> Result<Bounced, BounceError> {
    // Without CAP_NET_ADMIN the request is not even sent: under the
    // packaged unit (a user namespace of its own) the kernel's refusal did
    // not come back as EPERM but as "no netlink ack received", which looked
    // like a failed bounce, and the helper was never asked.
    let direct = if holds_net_admin() {
        match down_up(interface) {
            Ok(()) => return Ok(Bounced::Directly),
            Err(DownUp::NotPermitted(why)) => why,
            Err(DownUp::Failed(why)) => return Err(BounceError::Failed(why)),
        }
    } else {
        "it holds no CAP_NET_ADMIN".to_owned()
    };
    match ask_helper(interface, helper) {
        Ok(()) => Ok(Bounced::ByHelper),
        Err(Asked::Unreachable(why)) => Err(BounceError::NoPrivilege(format!(
            "the gateway itself: {direct}; the link helper at {}: {why}",
            helper.display()
        ))),
        Err(Asked::Refused(why)) => Err(BounceError::Refused(why)),
        Err(Asked::Failed(why)) => Err(BounceError::Failed(why)),
    }
}

/// Whether this process may take links down and up itself: CAP_NET_ADMIN
/// among its effective capabilities (/proc/self/status). When that cannot
/// be read, it tries.
fn holds_net_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| net_admin_in(&status))
        .unwrap_or(true)
}

/// CAP_NET_ADMIN (bit 12) in the `CapEff:` line of a /proc/PID/status text.
fn net_admin_in(status: &str) -> Option<bool> {
    const CAP_NET_ADMIN: u32 = 12;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    Some(caps & (1 << CAP_NET_ADMIN) != 0)
}

/// Why [`down_up`] did not work.
#[derive(Debug)]
enum DownUp {
    /// EPERM / EACCES: this process lacks CAP_NET_ADMIN.
    NotPermitted(String),
    Failed(String),
}

/// Sets the link down, then up, over rtnetlink. Only IFF_UP changes.
fn down_up(interface: &str) -> Result<(), DownUp> {
    let classify = |step: &str, e: socketcan::Error| {
        let errno = match &e {
            socketcan::Error::Nl(nl) => nl.errno(),
            socketcan::Error::Io(io) => io.raw_os_error(),
            _ => None,
        };
        let why = format!("{step} {interface}: {e}");
        match errno {
            Some(libc::EPERM | libc::EACCES) => DownUp::NotPermitted(why),
            _ => DownUp::Failed(why),
        }
    };
    let link = CanInterface::open(interface).map_err(|e| classify("open", e))?;
    link.bring_down().map_err(|e| classify("down", e))?;
    link.bring_up().map_err(|e| classify("up", e))
}

/// Why the helper did not bounce.
#[derive(Debug)]
enum Asked {
    /// No helper there (not installed, not activated), or no permission to
    /// talk to it.
    Unreachable(String),
    Refused(String),
    Failed(String),
}

fn ask_helper(interface: &str, helper: &Path) -> Result<(), Asked> {
    let mut stream = UnixStream::connect(helper).map_err(|e| Asked::Unreachable(e.to_string()))?;
    let talk = |stream: &mut UnixStream| -> io::Result<String> {
        stream.set_read_timeout(Some(HELPER_TIMEOUT))?;
        stream.set_write_timeout(Some(HELPER_TIMEOUT))?;
        stream.write_all(format!("bounce {interface}\n").as_bytes())?;
        let mut answer = String::new();
        BufReader::new(stream.take(512)).read_line(&mut answer)?;
        Ok(answer.trim().to_owned())
    };
    let answer = talk(&mut stream).map_err(|e| Asked::Failed(format!("talking to the link helper: {e}")))?;
    match answer.split_once(' ').unwrap_or((answer.as_str(), "")) {
        ("ok", _) => Ok(()),
        ("refused", why) => Err(Asked::Refused(why.to_owned())),
        ("failed", why) => Err(Asked::Failed(why.to_owned())),
        _ => Err(Asked::Failed(format!("the link helper answered {answer:?}"))),
    }
}

/// What the helper decided about one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Bounce this interface.
    Bounce(String),
    /// Say no, and why.
    Refuse(String),
}

/// What the gateway's configuration lets the helper bounce.
#[derive(Debug, Clone, Copy)]
pub enum Bounceable<'a> {
    /// `[can] RECOVER = "off"`: the gateway never asks, so nothing.
    Nothing,
    /// The configuration's CAN-IFs.
    These(&'a [String]),
}

/// The helper's whole policy: `request` from a peer with user id `peer_uid`
/// is granted only when it comes from `allowed_uid`, in exactly the form
/// `bounce IFNAME`, and names one of the interfaces `allowed` lets it
/// bounce (the gateway's configured CAN-IFs, none with RECOVER = "off").
pub fn judge(request: &str, peer_uid: u32, allowed_uid: u32, allowed: Bounceable) -> Verdict {
    if peer_uid != allowed_uid {
        return Verdict::Refuse(format!("user id {peer_uid} is not the gateway's ({allowed_uid})"));
    }
    let Some(name) = request.strip_suffix('\n').unwrap_or(request).strip_prefix("bounce ") else {
        return Verdict::Refuse("the only request is: bounce IFNAME".into());
    };
    let Bounceable::These(interfaces) = allowed else {
        return Verdict::Refuse("[can] RECOVER is \"off\" in the gateway's configuration".into());
    };
    if !interfaces.iter().any(|i| i == name) {
        return Verdict::Refuse(format!("{name:?} is not a CAN-IF of the gateway's configuration"));
    }
    Verdict::Bounce(name.to_owned())
}

/// The user id of the process at the other end of the unix socket `fd`.
pub fn peer_uid(fd: RawFd) -> io::Result<u32> {
    // SAFETY: ucred is plain old data; all zeroes is a valid value.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes for the call's duration.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// The user id of the user called `name`.
pub fn user_id(name: &str) -> io::Result<u32> {
    let c_name = std::ffi::CString::new(name).map_err(|_| io::Error::other("a user name has no NUL"))?;
    // SAFETY: passwd is plain old data; getpwnam_r fills it, pointing into `buf`.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: every pointer is valid for the call; `buf` outlives `pw`'s use.
    let r = unsafe { libc::getpwnam_r(c_name.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    if found.is_null() {
        return Err(io::Error::other(format!("no user {name}")));
    }
    Ok(pw.pw_uid)
}

/// `bms-gateway link-helper`: serves the one connection systemd hands over
/// as standard input (`Accept=yes`), then exits. Answers `ok`,
/// `refused WHY` or `failed WHY`, and logs what it did.
pub fn serve_helper(allowed_uid: u32, allowed: Bounceable) -> io::Result<()> {
    let stdin = io::stdin();
    let fd = stdin.as_raw_fd();
    let uid = peer_uid(fd)?;
    let mut request = String::new();
    stdin.lock().take(MAX_REQUEST).read_line(&mut request)?;
    let answer = match judge(&request, uid, allowed_uid, allowed) {
        Verdict::Refuse(why) => {
            log::warn!(
                "link helper: refused {:?} from user id {uid}: {why}",
                request.trim_end()
            );
            format!("refused {why}")
        }
        Verdict::Bounce(name) => match down_up(&name) {
            Ok(()) => {
                log::info!("link helper: took {name} down and up for user id {uid}");
                "ok".to_owned()
            }
            Err(DownUp::NotPermitted(why) | DownUp::Failed(why)) => {
                log::warn!("link helper: {why}");
                format!("failed {why}")
            }
        },
    };
    let mut out = io::stdout().lock();
    writeln!(out, "{answer}")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn configured() -> Vec<String> {
        vec!["can0".into(), "can1".into()]
    }

    #[test]
    fn the_helper_bounces_only_a_configured_interface_for_the_gateways_user() {
        assert_eq!(
            judge("bounce can1\n", 998, 998, Bounceable::These(&configured())),
            Verdict::Bounce("can1".into())
        );
        assert!(
            matches!(judge("bounce can1\n", 1000, 998, Bounceable::These(&configured())), Verdict::Refuse(w) if w.contains("1000"))
        );
        assert!(
            matches!(judge("bounce eth0\n", 998, 998, Bounceable::These(&configured())), Verdict::Refuse(w) if w.contains("eth0"))
        );
        // No prefix match, no trailing words, no other verb.
        assert!(matches!(
            judge("bounce can\n", 998, 998, Bounceable::These(&configured())),
            Verdict::Refuse(_)
        ));
        assert!(matches!(
            judge("bounce can0 x\n", 998, 998, Bounceable::These(&configured())),
            Verdict::Refuse(_)
        ));
        assert!(matches!(
            judge("delete can0\n", 998, 998, Bounceable::These(&configured())),
            Verdict::Refuse(_)
        ));
        // RECOVER = "off": the gateway never asks, so nothing is bounced.
        assert!(matches!(
            judge("bounce can1\n", 998, 998, Bounceable::Nothing),
            Verdict::Refuse(w) if w.contains("RECOVER")
        ));
    }

    #[test]
    fn the_peer_is_known_by_its_user_id() {
        let (a, _b) = UnixStream::pair().unwrap();
        // SAFETY: getuid cannot fail.
        assert_eq!(peer_uid(a.as_raw_fd()).unwrap(), unsafe { libc::getuid() });
    }

    /// The packaged gateway (CapEff 0) goes straight to the helper; root
    /// (all capabilities) and a process given only CAP_NET_ADMIN bounce
    /// themselves.
    #[test]
    fn cap_net_admin_is_read_from_the_effective_set() {
        let status = |eff: &str| {
            format!(
                "Name:\tbms-gateway\nCapInh:\t0000000000000000\nCapPrm:\t0000000000001000\nCapEff:\t{eff}\nCapBnd:\t000001ffffffffff\n"
            )
        };
        assert_eq!(net_admin_in(&status("0000000000000000")), Some(false));
        assert_eq!(net_admin_in(&status("000001ffffffffff")), Some(true));
        assert_eq!(net_admin_in(&status("0000000000001000")), Some(true));
        // CAP_NET_RAW (13) and CAP_NET_BIND_SERVICE (10) are not enough.
        assert_eq!(net_admin_in(&status("0000000000002400")), Some(false));
        assert_eq!(net_admin_in("Name:\tx\n"), None);
    }

    #[test]
    fn root_is_user_id_zero() {
        assert_eq!(user_id("root").unwrap(), 0);
        assert!(user_id("no-such-user-bms").is_err());
    }

    /// The gateway's side against a fake helper: each answer maps to its
    /// error, and the request is exactly one line.
    #[test]
    fn the_helpers_answers_become_the_bounce_result() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("helper.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let answers = ["ok", "refused \"x\" is not a CAN-IF", "failed down x: EBUSY", "what?"];
        let server = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for answer in answers {
                let (mut s, _) = listener.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line).unwrap();
                requests.push(line);
                writeln!(s, "{answer}").unwrap();
            }
            requests
        });
        assert!(ask_helper("x", &path).is_ok());
        assert!(matches!(ask_helper("x", &path), Err(Asked::Refused(w)) if w == "\"x\" is not a CAN-IF"));
        assert!(matches!(ask_helper("x", &path), Err(Asked::Failed(w)) if w == "down x: EBUSY"));
        assert!(matches!(ask_helper("x", &path), Err(Asked::Failed(w)) if w.contains("what?")));
        assert_eq!(server.join().unwrap(), vec!["bounce x\n"; 4]);
        let gone = dir.path().join("none.sock");
        assert!(matches!(ask_helper("x", &gone), Err(Asked::Unreachable(_))));
    }
}
