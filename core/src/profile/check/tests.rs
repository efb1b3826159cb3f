//! Checker tests: each profile's own frames pass its reader's rules (two
//! descriptions written independently: the encoder and the layout table),
//! and each rule catches what it is for.

use super::*;
use crate::codec::Manufacturer;
use crate::profile::frames;
use crate::profile::tests::{battery, shown};
use std::time::Duration;

fn run(profile: Profile, sets: usize, gap: Duration) -> Vec<String> {
    let mut c = Checker::new(profile);
    let name = Manufacturer::new(profile.default_manufacturer()).unwrap();
    let t0 = Instant::now();
    let mut out = Vec::new();
    for k in 0..sets {
        let set = frames(profile, &shown(battery()), name, profile.default_voltage_unit());
        for (n, f) in set.frames().iter().enumerate() {
            let at = t0 + gap * k as u32 + Duration::from_millis(n as u64);
            out.extend(c.check(f, at));
        }
    }
    out
}

#[test]
fn every_profile_passes_its_own_reader() {
    for p in Profile::ALL {
        assert_eq!(run(p, 3, Duration::from_secs(1)), Vec::<String>::new(), "{}", p.name());
    }
}

#[test]
fn sma_pacing_is_checked() {
    let v = run(Profile::Sma, 2, Duration::from_millis(100));
    assert_eq!(v.len(), 6, "every ID of the second set is too soon: {v:?}");
    assert!(v[0].contains("again after 100 ms"), "{}", v[0]);
    assert!(run(Profile::Pylon, 2, Duration::from_millis(100)).is_empty());
}

#[test]
fn dlc_order_markers_and_names() {
    let t = Instant::now();
    let mut c = Checker::new(Profile::Pylon);
    assert_eq!(
        c.check(&Frame::standard(0x355, &[88, 0, 94, 0, 0, 0]), t),
        ["355: DLC 6, the profile sends 4"]
    );
    assert_eq!(
        c.check(&Frame::standard(0x351, &[0x14, 2, 0, 0, 0, 0, 0, 0]), t),
        ["351 after 355: out of the pylon profile's order"]
    );
    assert!(c.check(&Frame::standard(0x372, &[0; 8]), t)[0].contains("not part of the pylon profile"));
    let mut c = Checker::new(Profile::Sma);
    let v = c.check(&Frame::standard(0x351, &[0, 0, 0xFF, 0xFF, 0, 0, 0, 0]), t);
    assert_eq!(v.len(), 3, "{v:?}");
    assert!(v[0].contains("CVL 0 V") && v[1].contains("negative CCL") && v[2].contains("FFFF"));
    let mut c = Checker::new(Profile::Victron);
    c.check(&Frame::standard(0x35A, &[0; 8]), t);
    assert!(c.check(&Frame::standard(0x35E, b"PYLON"), t)[0].contains("Pylontech rewrites"));
    assert!(
        c.check(&Frame::standard(0x305, &[0; 8]), t).is_empty(),
        "inverter frames are not judged"
    );
}

#[test]
fn decode_reads_each_layout_back() {
    let b = battery();
    let name = Manufacturer::new("PYLON").unwrap();
    let lux = frames(Profile::Luxpower, &shown(b), name, VoltageUnit::Centivolt);
    let r: Vec<Reading> = lux
        .frames()
        .iter()
        .map(|f| decode(Profile::Luxpower, VoltageUnit::Centivolt, f).unwrap())
        .collect();
    match r[1] {
        Reading::LuxSoc {
            soc,
            v_cell_max,
            v_cell_min,
        } => {
            assert_eq!((soc.soc, soc.soh, v_cell_max, v_cell_min), (76.0, 98.0, 3.322, 3.301))
        }
        other => panic!("{other:?}"),
    }
    match r[2] {
        Reading::LuxMeasurements {
            v_avg,
            i_total,
            t_cell_max,
            t_cell_min,
        } => {
            assert_eq!((v_avg, i_total, t_cell_max, t_cell_min), (51.23, -12.5, 24.0, 18.0))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(r[3], Reading::LuxFlags { capacity_ah: 300.0, .. }));
    let mut forced = b;
    forced.requests.force_charge_request = true;
    let sol = frames(Profile::SolArk, &shown(forced), name, VoltageUnit::Decivolt);
    let read: Vec<Reading> = sol
        .frames()
        .iter()
        .map(|f| decode(Profile::SolArk, VoltageUnit::Decivolt, f).unwrap())
        .collect();
    assert!(
        read.iter()
            .any(|r| matches!(r, Reading::Message(Message::Measurements(m)) if m.v_avg == 51.2))
    );
    assert!(read.iter().any(
        |r| matches!(r, Reading::Message(Message::Requests(q)) if q.force_charge_request && !q.force_charge_request_2)
    ));
    // Luxpower maps the force-charge bits like Sol-Ark (issue 22 defect 10):
    // force charge I is sent as bit 4 (0xD0) and read back as force charge I.
    let lux = frames(Profile::Luxpower, &shown(forced), name, VoltageUnit::Centivolt);
    let f35c = lux.frames().iter().find(|f| f.id.raw() == 0x35C).unwrap();
    assert_eq!(f35c.data()[0], 0xD0);
    assert!(matches!(
        decode(Profile::Luxpower, VoltageUnit::Centivolt, f35c).unwrap(),
        Reading::Message(Message::Requests(q)) if q.force_charge_request && !q.force_charge_request_2
    ));
}
