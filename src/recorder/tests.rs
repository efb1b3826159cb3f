use super::*;
use crate::can::virtual_bus::VirtualBus;
use crate::config_text::ConfigText;
use crate::frame::{CanId, FrameKind};

fn config(seconds: u32, keep: u32) -> Config {
    let text = format!(
        "{}[recorder]\nSECONDS = {seconds}\nKEEP = {keep}\n",
        ConfigText::new()
            .input("bat1", 100.0, "")
            .input("bat2", 100.0, "")
            .output("inv1", "")
            .mqtt("ACTIVATED = false")
            .text()
    );
    crate::config::parse(&text).unwrap()
}

#[test]
fn the_ring_is_sized_from_seconds_and_the_interfaces() {
    // 2 batteries x 20 + 1 inverter x 40 = 80 frames/s, for 300 s.
    assert_eq!(Recorder::capacity(&config(300, 20)), 24_000);
    assert_eq!(Recorder::capacity(&config(10, 20)), 800);
    let dir = tempfile::tempdir().unwrap();
    assert!(Recorder::new(&config(0, 20), Some(dir.path())).dir().is_none());
    assert!(Recorder::new(&config(10, 20), None).dir().is_none());
    let on = Recorder::new(&config(10, 20), Some(dir.path()));
    assert_eq!(on.dir(), Some(dir.path().join("recordings").as_path()));
}

#[test]
fn the_serial_ring_is_sized_per_poll_cycle() {
    // A pack polled every 1 s: 6 entries/s; one every 0.05 s counts as 10
    // cycles/s (the 50 ms gaps allow no more): 60; a CAN input counts in
    // the CAN ring only: 10 s x 66 = 660, and 10 s x 40 = 400 frames.
    let text = format!(
        "{}[[bmses-in]]\nSERIAL-PORT = \"/dev/ttyUSB0\"\nCAPACITY-AH = 100\n\
         [[bmses-in]]\nSERIAL-PORT = \"/dev/ttyUSB1\"\nCAPACITY-AH = 100\nPOLL-INTERVAL = 0.05\n\
         [recorder]\nSECONDS = 10\n",
        ConfigText::new()
            .input("bat1", 100.0, "")
            .output("inv1", "")
            .mqtt("ACTIVATED = false")
            .text()
    );
    let config = crate::config::parse(&text).unwrap();
    assert_eq!(Recorder::serial_capacity(&config), 660);
    assert_eq!(Recorder::capacity(&config), 600);
}

#[test]
fn ports_record_what_they_read_and_write_and_a_request_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::new(&config(10, 20), Some(dir.path()));
    let bus = VirtualBus::new();
    for name in ["bat1", "inv1", "other"] {
        bus.create(name);
    }
    let opener = recorder.opener(&bus);
    let mut battery_side = bus.open("bat1").unwrap();
    let mut input = opener.open("bat1").unwrap();
    let mut output = opener.open("inv1").unwrap();
    // Not a configured interface: passed through, not recorded.
    let mut other = opener.open("other").unwrap();
    let sent = Frame::standard(0x351, &[0x14, 0x02, 0xC0, 0x12]);
    battery_side.write(&sent).unwrap();
    let got = input.read(Duration::from_secs(1)).unwrap();
    assert_eq!(got, Some(sent));
    // The gateway's input threads wait with the clock they have read.
    let second = Frame::standard(0x355, &[0x50, 0x00]);
    battery_side.write(&second).unwrap();
    let (_keep, no_stop) = crate::shutdown::channel();
    let now = Instant::now();
    let woke = input
        .read_until_from(now, now + Duration::from_secs(1), &no_stop)
        .unwrap();
    assert_eq!(woke, Wake::Frame(second));
    let extended = Frame::new(CanId::Extended(0x305), FrameKind::Data, &[]);
    output.write(&extended).unwrap();
    other.write(&sent).unwrap();
    let (stop_tx, stop) = crate::shutdown::channel();
    let events = Events::default();
    let written = std::thread::scope(|s| {
        s.spawn(|| recorder.run(&events, &stop));
        let written = recorder.ask(Reason::Request);
        drop(stop_tx);
        written
    })
    .unwrap();
    assert_eq!(written.frames, 3);
    let name = written.path.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(dump::is_recording(&name) && name.ends_with("-request.log"), "{name}");
    let text = std::fs::read_to_string(&written.path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].ends_with(") bat1 351#1402C012"), "{text}");
    assert!(lines[1].ends_with(") bat1 355#5000"), "{text}");
    assert!(lines[2].ends_with(") inv1 00000305#"), "{text}");
    let event = &events.after(0)[0];
    assert_eq!(event.kind, Kind::RecordingWritten);
    assert!(event.message.contains(&name), "{}", event.message);
}

#[test]
fn a_dump_that_cannot_be_written_is_an_error_and_an_event() {
    let dir = tempfile::tempdir().unwrap();
    // The recordings directory cannot be made: a file has its name.
    std::fs::write(dir.path().join("recordings"), "in the way").unwrap();
    let recorder = Recorder::new(&config(10, 20), Some(dir.path()));
    recorder.record(0, &Frame::standard(0x351, &[1]));
    let (stop_tx, stop) = crate::shutdown::channel();
    let events = Events::default();
    let (first, second) = std::thread::scope(|s| {
        s.spawn(|| recorder.run(&events, &stop));
        let answers = (recorder.ask(Reason::Signal), recorder.ask(Reason::Signal));
        drop(stop_tx);
        answers
    });
    assert!(first.unwrap_err().contains("not written to"));
    assert!(second.is_err());
    // Rate-limited: one event for both.
    let failed: Vec<_> = events
        .after(0)
        .into_iter()
        .filter(|e| e.kind == Kind::RecordingFailed)
        .collect();
    assert_eq!(failed.len(), 1);
}

#[test]
fn an_off_recorder_says_so() {
    let off = Recorder::default();
    off.record(0, &Frame::standard(0x351, &[1]));
    off.trigger(Reason::Safe);
    assert!(off.ask(Reason::Request).unwrap_err().contains("SECONDS = 0"));
}

#[test]
fn entering_degraded_or_safe_records() {
    assert_eq!(Reason::entering(SystemState::Ok), None);
    assert_eq!(Reason::entering(SystemState::Degraded), Some(Reason::Degraded));
    assert_eq!(Reason::entering(SystemState::Safe), Some(Reason::Safe));
}
