use super::*;
use crate::config;
use crate::frame::FrameKind;

/// A real stack's burst, bytes from the Pylontech document's example:
/// CVL 53.2 V, CCL 480 A, DCL 480 A, DVL 45 V; SOC 88 %, SOH 94 %; 49.86 V.
fn pylon_burst(name: &[u8]) -> Vec<Frame> {
    vec![
        Frame::standard(0x359, &[0, 0, 0, 0, 6, 0x50, 0x4E]),
        Frame::standard(0x351, &[0x14, 0x02, 0xC0, 0x12, 0xC0, 0x12, 0xC2, 0x01]),
        Frame::standard(0x355, &[0x58, 0x00, 0x5E, 0x00]),
        Frame::standard(0x356, &[0x7A, 0x13, 0xF2, 0xFE, 0x6B, 0x01]),
        Frame::standard(0x35C, &[0xC0, 0x00]),
        Frame::standard(0x35E, name),
    ]
}

fn keepalive() -> Frame {
    Frame::standard(0x305, &[0; 8])
}

#[test]
fn a_battery_is_known_by_its_frames_and_values() {
    let Role::Battery(b) = classify(&pylon_burst(b"PYLON\0\0\0")) else {
        panic!("not a battery");
    };
    assert_eq!(b.frames, 6);
    assert_eq!(b.name.map(|n| n.name()).as_deref(), Some("PYLON"));
    assert_eq!(b.soc, Some(88.0));
    assert_eq!(b.voltage, Some(49.86));
    let l = b.limits.unwrap();
    assert_eq!(
        (l.v_charge_cmd, l.i_lim_charge, l.i_lim_discharge),
        (53.2, 480.0, 480.0)
    );
}

#[test]
fn an_inverter_is_known_by_0x305_to_0x307_in_either_format() {
    let Role::Inverter(v) = classify(&[keepalive(), Frame::standard(0x307, &[1])]) else {
        panic!("not an inverter");
    };
    assert_eq!((v.frames, v.standard, v.extended), (2, true, false));
    let ext = Frame::new(CanId::Extended(0x306), FrameKind::Data, &[0; 8]);
    assert_eq!(
        classify(&[ext]),
        Role::Inverter(InverterSeen {
            frames: 1,
            standard: false,
            extended: true
        })
    );
    // 0x308 is not an inverter's.
    assert_eq!(classify(&[Frame::standard(0x308, &[0])]), Role::Foreign { frames: 1 });
}

#[test]
fn both_on_one_bus_foreign_traffic_and_silence() {
    let mut frames = pylon_burst(b"PYLON\0\0\0");
    frames.push(keepalive());
    assert!(matches!(classify(&frames), Role::Both(b, v) if b.frames == 6 && v.frames == 1));
    let foreign = [
        Frame::standard(0x123, &[1, 2]),
        Frame::new(CanId::Extended(0x1ABC_DEF0), FrameKind::Data, &[0]),
        // A 0x351 too short to decode is no proof of a battery.
        Frame::standard(0x351, &[1]),
    ];
    assert_eq!(classify(&foreign), Role::Foreign { frames: 3 });
    assert_eq!(classify(&[]), Role::Silent);
}

fn fake_net(entries: &[(&str, &str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, kind, flags) in entries {
        let d = dir.path().join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
        std::fs::write(d.join("flags"), format!("{flags}\n")).unwrap();
    }
    dir
}

#[test]
fn only_can_interfaces_are_listed_with_their_link() {
    let net = fake_net(&[
        ("eth0", "1", "0x1003"),
        ("vcan1", "280", "0xc0"),
        ("can0", "280", "0x40c1"),
        ("lo", "772", "0x9"),
    ]);
    assert_eq!(
        can_interfaces(net.path()),
        [("can0".to_string(), Link::Up), ("vcan1".to_string(), Link::Down)]
    );
    assert!(can_interfaces(&net.path().join("missing")).is_empty());
}

#[test]
fn no_can_interface_at_all_is_said_plainly() {
    let net = fake_net(&[("eth0", "1", "0x1003")]);
    let findings = scan(&crate::can::socket::SocketCan, net.path(), Duration::from_millis(10));
    assert!(findings.is_empty());
    assert!(report(&findings, Duration::from_secs(3)).starts_with("no CAN interfaces"));
}

fn finding(name: &str, heard: Result<Role, String>) -> Finding {
    Finding {
        interface: Interface {
            name: name.into(),
            link: if heard.is_ok() { Link::Up } else { Link::Down },
            bitrate: Some(500_000),
            controller: Some("error-active"),
            restart_ms: Some(100),
        },
        heard,
    }
}

#[test]
fn the_generated_config_is_valid_and_has_one_section_per_device() {
    let findings = [
        finding("can0", Ok(classify(&pylon_burst(b"PYLON\0\0\0")))),
        finding("can1", Ok(classify(&[keepalive()]))),
        // A name with a quote and a backslash must not break the TOML.
        finding("can2", Ok(classify(&pylon_burst(b"A\"B\\C\0\0\0")))),
        finding("can3", Ok(Role::Silent)),
        finding("can4", Err("down".into())),
        finding("can5", Ok(classify(&[keepalive(), pylon_burst(b"X\0")[1]]))),
    ];
    let text = config_text(&findings);
    let config = config::parse(&text).unwrap_or_else(|p| panic!("{p:?}\n{text}"));
    let ins: Vec<_> = config
        .inputs
        .iter()
        .map(|i| (i.can_if.as_str(), i.capacity_ah))
        .collect();
    assert_eq!(ins, [("can0", 100.0), ("can2", 100.0)]);
    assert!(config.inputs[0].description.contains("PYLON"));
    assert!(config.inputs[0].description.contains("SOC 88 %"));
    assert!(config.inputs[1].description.starts_with("A\"B\\C"));
    let outs: Vec<_> = config.outputs.iter().map(|o| o.can_if.as_str()).collect();
    assert_eq!(outs, ["can1"]);
    assert!(!config.gateway_activated);
    assert!(text.contains("# can5: a battery and an inverter on the same bus"));
    assert!(text.contains("CAPACITY-AH = 100.0"));
}

#[test]
fn the_report_names_each_role_and_the_link_details() {
    let findings = [
        finding("can0", Ok(classify(&pylon_burst(b"PYLON\0\0\0")))),
        finding("can1", Ok(classify(&[keepalive()]))),
        finding("vcan2", Ok(Role::Silent)),
        finding("can3", Err("down: not listened to".into())),
    ];
    let text = report(&findings, Duration::from_secs(3));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with("can0") && lines[0].contains("battery: PYLON, SOC 88 %, 49.86 V"));
    assert!(lines[0].contains("[up, 500000 bit/s, error-active, restart-ms 100]"));
    assert!(lines[1].contains("inverter: 0x305-0x307 11-bit, 1 frames"));
    assert!(lines[2].contains("silent for 3 s"));
    assert!(lines[3].contains("[down") && lines[3].contains("not listened"));
}
