use super::*;

/// A sample where every value is `x` (plus a per-column offset so that
/// columns differ), for `batteries` and `inverters`.
fn sample(x: f64, batteries: usize, inverters: usize) -> Sample {
    Sample {
        bank: [Some(x), Some(50.0 + x), Some(-x), Some(20.0), Some(100.0), Some(90.0)],
        why_charge: Some(Why {
            reason: "sum",
            battery: None,
        }),
        why_discharge: Some(Why {
            reason: "share",
            battery: Some(2),
        }),
        batteries: (0..batteries)
            .map(|k| {
                let k = k as f64;
                [
                    Some(x + k),
                    Some(-x),
                    Some(0.25),
                    Some(21.5 + k),
                    Some(3.301),
                    Some(3.342),
                ]
            })
            .collect(),
        inverters: (0..inverters).map(|_| [Some(40.0), Some(35.5)]).collect(),
    }
}

/// Whole seconds of a 10 s row boundary, well after 1970.
const T0: i64 = 1_764_000_000;

fn column<'a>(c: &'a Columns, name: &str) -> &'a [Option<f64>] {
    c[name].as_deref().unwrap_or_else(|| panic!("{name} is null"))
}

#[test]
fn the_ring_is_allocated_once_and_its_bound_is_as_stated() {
    let mut h = History::new(4, 2);
    // 10 values of the bank, 6 per battery, 2 per inverter, 2 bytes each.
    assert_eq!(BYTES_BANK, 8640 * 10 * 2);
    assert_eq!(BYTES_PER_BATTERY, 103_680);
    assert_eq!(BYTES_PER_INVERTER, 34_560);
    assert_eq!(h.bytes(), BYTES_BANK + 4 * BYTES_PER_BATTERY + 2 * BYTES_PER_INVERTER);
    let (at, capacity) = (h.cells.as_ptr(), h.cells.capacity());
    // Three days of samples: the same buffer, never grown.
    for n in 0..3 * SLOTS as i64 {
        assert_eq!(
            h.push(T0 + n * SLOT_S, &sample((n % 1000) as f64 / 10.0, 4, 2)),
            Pushed::Stored
        );
    }
    assert_eq!((h.cells.as_ptr(), h.cells.capacity()), (at, capacity));
    assert_eq!(h.bytes(), 656_640);
}

#[test]
fn the_ring_wraps_around_keeping_the_last_24_hours() {
    let mut h = History::new(1, 1);
    let extra = 5;
    for n in 0..SLOTS as i64 + extra {
        h.push(T0 + n * SLOT_S, &sample((n % 1000) as f64 / 10.0, 1, 1));
    }
    let t = h.table(None, Some(SLOT_S));
    assert_eq!(t.rows, SLOTS);
    // The 5 oldest were overwritten: row 0 is sample 5, the last is the last.
    assert_eq!(t.start, T0 + extra * SLOT_S);
    let soc = column(&t.bank, "soc");
    assert_eq!(soc[0], Some(0.5));
    let last = (SLOTS as i64 + extra - 1) % 1000;
    assert_eq!(soc[SLOTS - 1], Some(last as f64 / 10.0));
    assert_eq!(column(&t.batteries[0], "soc")[0], Some(0.5));
    assert_eq!(h.newest(), Some(T0 + (SLOTS as i64 + extra - 1) * SLOT_S));
}

#[test]
fn missed_rows_are_gaps_and_the_past_is_never_rewritten() {
    let mut h = History::new(1, 0);
    assert_eq!(h.push(T0 + 3, &sample(10.0, 1, 0)), Pushed::Stored);
    // The same 10 s row, and an older one: skipped.
    assert_eq!(h.push(T0 + 9, &sample(99.0, 1, 0)), Pushed::Skipped);
    assert_eq!(h.push(T0 - 20, &sample(99.0, 1, 0)), Pushed::Skipped);
    // 40 s later: three rows nobody filled.
    assert_eq!(h.push(T0 + 41, &sample(20.0, 1, 0)), Pushed::Stored);
    let t = h.table(None, Some(10));
    assert_eq!((t.start, t.rows), (T0, 5));
    assert_eq!(column(&t.bank, "soc"), [Some(10.0), None, None, None, Some(20.0)]);
    // More than 24 h later: nothing older is kept.
    h.push(T0 + 41 + 86_400, &sample(30.0, 1, 0));
    let t = h.table(None, Some(10));
    assert_eq!((t.start, t.rows), (T0 + 40 + 86_400, 1));
}

#[test]
fn a_stale_battery_is_a_gap_and_unknown_cells_a_null_column() {
    let mut h = History::new(2, 0);
    let mut s = sample(50.0, 2, 0);
    s.batteries[1] = [None; 6];
    s.batteries[0][4] = None;
    s.batteries[0][5] = None;
    h.push(T0, &s);
    let t = h.table(None, None);
    assert_eq!(column(&t.batteries[0], "soc"), [Some(50.0)]);
    assert_eq!(column(&t.batteries[0], "share"), [Some(0.25)]);
    assert_eq!(t.batteries[0]["v_cell_min"], None);
    assert_eq!(t.batteries[1]["soc"], None);
    let json: serde_json::Value = serde_json::from_str(&t.json()).unwrap();
    assert_eq!(json["batteries"][1]["soc"], serde_json::Value::Null);
    assert_eq!(json["batteries"][0]["t_avg"], serde_json::json!([21.5]));
}

#[test]
fn rows_of_a_step_are_the_mean_of_their_known_samples() {
    let mut h = History::new(0, 0);
    // 60 s rows from T0 (a multiple of 60): 10, 20, gap, 40 -> 70/3... and 60.
    let base = T0 - T0.rem_euclid(60);
    for (n, soc) in [(0, 10.0), (1, 20.0), (3, 45.0), (6, 60.0)] {
        h.push(base + n * SLOT_S, &sample(soc, 0, 0));
    }
    let t = h.table(None, Some(60));
    assert_eq!((t.start, t.rows, t.step), (base, 2, 60));
    // (10 + 20 + 45) / 3 = 25; the second row has one sample.
    assert_eq!(column(&t.bank, "soc"), [Some(25.0), Some(60.0)]);
    // since: from the row holding it.
    let t = h.table(Some(base + 61), Some(60));
    assert_eq!((t.start, t.rows), (base + 60, 1));
    let t = h.table(Some(base + 10_000), Some(60));
    assert_eq!(t.rows, 0);
    assert!(t.bank["soc"].is_none());
}

#[test]
fn the_reasons_are_listed_where_they_change() {
    let mut h = History::new(0, 0);
    let reasons = [
        ("sum", None),
        ("sum", None),
        ("share", Some(2)),
        ("share", Some(3)),
        ("sum", None),
    ];
    for (n, (reason, battery)) in reasons.into_iter().enumerate() {
        let mut s = sample(1.0, 0, 0);
        s.why_charge = Some(Why { reason, battery });
        h.push(T0 + n as i64 * SLOT_S, &s);
    }
    h.push(T0 + 50, &Sample::default());
    let t = h.table(None, Some(10));
    let s = |r: &str| Some(r.to_string());
    assert_eq!(
        t.why.charge,
        [
            Change(0, s("sum"), None),
            Change(2, s("share"), Some(2)),
            Change(3, s("share"), Some(3)),
            Change(4, s("sum"), None),
            Change(5, None, None),
        ]
    );
    let json = t.json();
    assert!(json.contains(r#""charge":[[0,"sum",null],[2,"share",2]"#), "{json}");
}

#[test]
fn the_default_table_has_at_most_1440_rows() {
    let mut h = History::new(0, 0);
    for n in 0..100 {
        h.push(T0 + n * SLOT_S, &sample(1.0, 0, 0));
    }
    assert_eq!((h.table(None, None).step, h.table(None, None).rows), (10, 100));
    for n in 100..SLOTS as i64 {
        h.push(T0 + n * SLOT_S, &sample(1.0, 0, 0));
    }
    let t = h.table(None, None);
    assert_eq!((t.step, t.rows), (60, 1440));
}

/// The page's JSON for a full day at 4 batteries and 2 inverters, every
/// value known and changing (the most digits), stays under 300 KiB.
#[test]
fn a_full_day_at_4_batteries_is_under_300_kib_of_json() {
    let mut h = History::new(4, 2);
    for n in 0..SLOTS as i64 {
        let x = (n % 997) as f64 / 10.0;
        let mut s = sample(x, 4, 2);
        for b in &mut s.batteries {
            *b = [
                Some(x),
                Some(-123.4 + x),
                Some(0.333),
                Some(-12.3),
                Some(3.123),
                Some(3.456),
            ];
        }
        s.bank[1] = Some(51.234 + x / 100.0);
        h.push(T0 + n * SLOT_S, &s);
    }
    let json = h.table(None, None).json();
    println!("24 h, 4 batteries, 2 inverters: {} bytes of JSON", json.len());
    assert!(json.len() < 300 * 1024, "{} bytes", json.len());
}

#[test]
fn a_reshaped_ring_keeps_the_bank_and_the_batteries_in_place() {
    let mut h = History::new(2, 1);
    h.push(T0, &sample(40.0, 2, 1));
    // A reload to one battery and two inverters.
    h.push(T0 + 10, &sample(41.0, 1, 2));
    assert_eq!((h.batteries(), h.inverters()), (1, 2));
    let t = h.table(None, Some(10));
    assert_eq!(column(&t.bank, "soc"), [Some(40.0), Some(41.0)]);
    assert_eq!(column(&t.batteries[0], "soc"), [Some(40.0), Some(41.0)]);
    assert_eq!(column(&t.inverters[0], "i_lim_discharge"), [Some(35.5), Some(35.5)]);
    assert_eq!(column(&t.inverters[1], "i_lim_charge"), [None, Some(40.0)]);
}

#[test]
fn values_out_of_range_are_clamped_and_not_a_number_is_unknown() {
    let mut h = History::new(0, 0);
    let mut s = sample(1.0, 0, 0);
    s.bank[2] = Some(5000.0);
    s.bank[3] = Some(f64::NAN);
    h.push(T0, &s);
    let t = h.table(None, None);
    assert_eq!(column(&t.bank, "i_total"), [Some(3276.7)]);
    assert_eq!(t.bank["t_avg"], None);
}

#[test]
fn encoded_and_decoded_it_is_the_same_and_damage_is_refused() {
    let mut h = History::new(2, 1);
    for n in 0..50 {
        h.push(T0 + n * SLOT_S, &sample(n as f64, 2, 1));
    }
    let bytes = encode(&h);
    assert_eq!(decode(&bytes), Ok(h.clone()));
    let mut damaged = bytes.clone();
    damaged[100] ^= 1;
    assert!(decode(&damaged).unwrap_err().contains("checksum"));
    assert!(decode(&bytes[..bytes.len() / 2]).is_err());
    assert!(decode(b"").is_err());
    assert!(decode(&encode(&History::new(0, 0))).is_ok());
    // A whole file (its checksum right) whose rows are no real times.
    for (newest, first) in [(Some(i64::MAX), 0), (Some(-5), -5), (Some(10), 20), (None, -1)] {
        let odd = History {
            newest,
            first,
            ..h.clone()
        };
        assert!(
            decode(&encode(&odd)).unwrap_err().contains("no real times"),
            "{newest:?} {first}"
        );
    }
}

#[test]
fn hostile_queries_are_refused() {
    assert_eq!(parse_query(""), Ok((None, None)));
    assert_eq!(
        parse_query("since=1764000000&step=60"),
        Ok((Some(1_764_000_000), Some(60)))
    );
    assert_eq!(parse_query("since=0"), Ok((Some(0), None)));
    for bad in [
        "since=abc",
        "since=-5",
        "since=",
        "since",
        "since=99999999999999999999",
        "since=999999999999",
        "since=1e9",
        "since=+5",
        "since=1.5",
        "since=%31",
        "step=15",
        "step=0",
        "step=-10",
        "step=86410",
        "other=1",
    ] {
        assert!(parse_query(bad).is_err(), "{bad}");
    }
}
