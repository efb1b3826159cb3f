//! `decode --rs485` on the protocol reference's vectors (§5): the values
//! the reference states for each, written out here by hand.

use super::*;

/// V7 (US5000, ADR 2): the requests are ours (§1.4's layout, INFO = ADR).
const V7_LOG: &str = "~20024642E00202FD33\r\n\
~20024600F07A00020F0D170D140D150D150D180D170D140D150D150D180D170D140D150D150D18050C0B0BEF0BF00BED0C0B00C9C447FFFF04FFFF00120172B90186A0E2D1\r\n\
~20024692E00202FD2E\r\n\
~20024600B01402D002AFC800C8FE0CC0F915\r\n";

fn decode_all(log: &str, protocol: Protocol) -> (Vec<Value>, usize) {
    let mut out = Vec::new();
    let bad = run(log.as_bytes(), &mut out, protocol).unwrap();
    let lines = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, bad)
}

fn close(got: &Value, want: f64) -> bool {
    got.as_f64().is_some_and(|g| (g - want).abs() < 1e-9)
}

#[test]
fn v7_requests_and_answers_decode_to_the_references_values() {
    let (lines, bad) = decode_all(V7_LOG, Protocol::Pylon);
    assert_eq!(bad, 0, "{lines:?}");
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[0],
        json!({"line": 1, "ver": "0x20", "adr": 2, "request": "0x42", "info": "02"})
    );
    let a = &lines[1];
    assert_eq!(
        (a["line"].clone(), a["rtn"].clone(), a["answers"].clone()),
        (json!(2), json!("0x00"), json!("0x42"))
    );
    assert_eq!(a["info_flag"], "0x00");
    // 15 cells 0D17 0D14 0D15 0D15 0D18, three times, in V.
    let five = [3.351, 3.348, 3.349, 3.349, 3.352];
    let cells: Vec<f64> = five.iter().chain(&five).chain(&five).copied().collect();
    assert_eq!(a["cells_v"], json!(cells));
    let t: Vec<f64> = a["cells_t"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (got, want) in t.iter().zip([35.2, 32.4, 32.5, 32.2, 35.2]) {
        assert!((got - want).abs() < 1e-9, "{t:?}");
    }
    assert_eq!(t.len(), 5);
    assert!(close(&a["i_total"], 20.1), "{a}");
    assert!(close(&a["v_avg"], 50.247), "{a}");
    assert!(close(&a["remaining_ah"], 94.905), "{a}");
    assert!(close(&a["full_ah"], 100.0), "{a}");
    assert_eq!(a["cycles"], 18);
    assert_eq!(lines[2]["request"], "0x92");
    let m = &lines[3];
    assert_eq!(m["answers"], "0x92");
    assert!(close(&m["v_charge_cmd"], 53.25), "{m}");
    assert!(close(&m["v_discharge_min"], 45.0), "{m}");
    assert!(close(&m["i_lim_charge"], 20.0), "{m}");
    // The reference's -50.0 A as a magnitude, as in the telegram (0x351's sense).
    assert!(close(&m["i_lim_discharge"], 50.0), "{m}");
    // Status 0xC0: charge and discharge enabled, nothing else.
    assert_eq!(m["status"], "0xC0");
    assert_eq!(
        (m["charge_enable"].clone(), m["discharge_enable"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(m["force_charge_request"], false);
}

#[test]
fn a_whole_group_answer_lists_its_packs() {
    // V4: three US2000 answering INFO = FF.
    let log = "~20024642E002FFFD09\n~20024600914211030F0CE70CE80CE60CE70CE80CE80CE80CE60CE50CE60CE80CE70CEA0CE50CE6050B910B870B870B870B87FFE6C18982DC02C350001F0F0CE20CE60CE60CE10CE50CE70CE60CE30CE20CE50CE30CE90CE70CE90CE9050B910B870B870B870B87FFE7C17082DC02C350001F0F0CE20CE50CE50CE20CE30CE30CE40CE50CE60CE60CE30CE40CE40CE60CE6050B910B7D0B7D0B7D0B7DFFE5C16082DC02C350001FB476\n";
    let (lines, bad) = decode_all(log, Protocol::Pylon);
    assert_eq!(bad, 0, "{lines:?}");
    let packs = lines[1]["packs"].as_array().unwrap();
    assert_eq!(packs.len(), 3);
    for (p, (current, voltage)) in packs.iter().zip([(-2.6, 49.545), (-2.5, 49.520), (-2.7, 49.504)]) {
        assert!(close(&p["i_total"], current) && close(&p["v_avg"], voltage), "{p}");
        assert!(close(&p["remaining_ah"], 33.5) && close(&p["full_ah"], 50.0), "{p}");
        assert_eq!(p["cycles"], 31);
        assert_eq!(p["cells_v"].as_array().unwrap().len(), 15);
    }
}

#[test]
fn seplos_pace_and_the_other_commands() {
    // V9 with the Seplos profile: 16 cells, -6.76 A, 52.80 V, 133.90 Ah.
    let seplos = "~20004642E00200FD37\n~2000460010960001100CD70CE90CF40CD60CEF0CE50CE10CDC0CE90CF00CE80CEF0CEA0CDA0CDE0CD8060BA60BA00B970BA60BA50BA2FD5C14A0344E0A426803134650004603E8149F0000000000000000DC6C\n~200046510000FDAE\n~20004600C040313130312D5350313520020743414E50726F746F636F6C3A536F666172202020F046\n";
    let (lines, bad) = decode_all(seplos, Protocol::Seplos);
    assert_eq!(bad, 0, "{lines:?}");
    let a = &lines[1];
    assert_eq!(a["cells_v"].as_array().unwrap().len(), 16);
    assert_eq!(a["cells_v"][0], 3.287);
    assert_eq!(a["cells_t"].as_array().unwrap().len(), 6);
    assert!(close(&a["i_total"], -6.76) && close(&a["v_avg"], 52.80), "{a}");
    assert!(close(&a["remaining_ah"], 133.90), "{a}");
    assert_eq!(
        (
            lines[3]["name"].clone(),
            lines[3]["version"].clone(),
            lines[3]["manufacturer"].clone()
        ),
        (json!("1101-SP15"), json!("0207"), json!("CANProtocol:Sofar"))
    );
    // V11 (0x4F) answers with no INFO; V6 (0x47 of a US3000C) after our
    // request (its checksum FDA7 worked out by hand, §1.3); then the same
    // request with its checksum one off: a bad line.
    let pylon = "~2002464F0000FD98\n~200246000000FDB2\n~200246470000FDA7\n~20024600B032110E420BEA0AF00D030A470384D2F0B3B0A7F80D030A47FC7CF27E\n~200246470000FDA8\n";
    let (lines, bad) = decode_all(pylon, Protocol::Pylon);
    assert_eq!(bad, 1, "{lines:?}");
    assert_eq!(lines[1]["answers"], "0x4F");
    assert_eq!(lines[1]["ver"], "0x20");
    let p = &lines[3];
    assert_eq!(p["answers"], "0x47");
    for (field, want) in [
        ("cell_high_v", 3.65),
        ("cell_low_v", 3.05),
        ("cell_under_v", 2.8),
        ("charge_high_t", 60.0),
        ("charge_low_t", -10.0),
        ("charge_current_a", 90.0),
        ("module_high_v", 54.0),
        ("module_low_v", 46.0),
        ("module_under_v", 43.0),
        ("discharge_current_a", -90.0),
    ] {
        assert!(close(&p[field], want), "{field}: {p}");
    }
    assert_eq!(lines[4]["error"], "rejected: checksum");
}

#[test]
fn bad_lines_are_reported_with_their_number_and_counted() {
    // Line 1: V7's 0x92 answer with one hex digit flipped (checksum).
    // Line 2: not a frame. Line 3: blank (skipped). Line 4: V3's answer,
    // but no request before it: kept as hex. Line 5: a frame cut short.
    // Line 6: RTN 0x04 after a request: not decoded, not bad.
    let log = "~20024600B01402D002AFC800C8FE0CC0F916\r\nhello\n\n~20024600B014026EF05AA0022BFDD5C0F915\n~2002460\n~20024642E00202FD33\n~200246040000FDAE\n";
    let (lines, bad) = decode_all(log, Protocol::Pylon);
    assert_eq!(bad, 3, "{lines:?}");
    let numbers: Vec<u64> = lines.iter().map(|l| l["line"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 4, 5, 6, 7]);
    assert_eq!(lines[0]["error"], "rejected: checksum");
    assert_eq!(lines[1]["error"], "not a frame: a line must start with ~");
    assert_eq!(lines[2]["info"], "026EF05AA0022BFDD5C0");
    assert!(lines[2]["note"].as_str().unwrap().contains("no request"));
    assert!(
        lines[3]["error"].as_str().unwrap().starts_with("rejected: "),
        "{}",
        lines[3]
    );
    assert_eq!(
        (lines[5]["rtn"].clone(), lines[5]["answers"].clone()),
        (json!("0x04"), json!("0x42"))
    );
    assert!(lines[5].get("error").is_none());
}

#[test]
fn a_flight_recordings_serial_lines_decode_and_its_can_lines_are_skipped() {
    // docs/recorder.md's format: V3's 0x92 exchange, its answer cut over
    // two lines (a run longer than an entry), a CAN frame in between.
    let recording = "(1700000000.000001) can0 351#1402\n\
# rs485 (1700000000.000002) /dev/ttyUSB0 adr=02 tx ~20024692E00202FD2E\\r\n\
# rs485 (1700000000.000003) /dev/ttyUSB0 adr=02 rx ~20024600B014026EF05A\n\
# rs485 (1700000000.000004) /dev/ttyUSB0 adr=02 rx+ A0022BFDD5C0F915\\r\n\
(1700000000.000005) can0 355#5000\n";
    let (lines, bad) = decode_all(recording, Protocol::Pylon);
    assert_eq!(bad, 0, "{lines:?}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        lines[0],
        json!({"line": 2, "ver": "0x20", "adr": 2, "request": "0x92", "info": "02"})
    );
    // CVL 28.400 V, CCL 55.5 A (V3), decoded as the answer to line 2.
    assert_eq!(
        (lines[1]["line"].clone(), lines[1]["answers"].clone()),
        (json!(3), json!("0x92"))
    );
    assert!(close(&lines[1]["v_charge_cmd"], 28.4));
    assert!(close(&lines[1]["i_lim_charge"], 55.5));
}
