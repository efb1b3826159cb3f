//! Configuration tests for the bank policy keys (spec 15): each read as
//! written, and each kind of mistake refused with its key, line and column.

use super::tests::{MINIMAL, only_problem};
use super::*;
use crate::policy::{ChargeStop, OnPackForbids, Policy, SocMode, Taper};

/// MINIMAL with a `[battery]` table of these lines (starting on line 8).
fn battery(lines: &str) -> String {
    format!("{MINIMAL}[battery]\n{lines}\n")
}

#[test]
fn the_policy_is_off_by_default() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.battery.policy, Policy::default());
    assert_eq!(c.battery.bank.on_pack_forbids, OnPackForbids::Stop);
    assert!(!c.battery.continues_without_forbidding_pack());
}

#[test]
fn every_policy_key_is_read() {
    let text = battery(
        "ON-PACK-FORBIDS = \"continue\"\n\
         TEMPERATURE-DERATING-CHARGE = [[0, 0.2], [10, 1], [45, 1.0], [55, 0]]\n\
         TEMPERATURE-DERATING-DISCHARGE = [[-20, 0.5], [0, 1]]\n\
         CHARGE-STOP-SOC = 90\n\
         CHARGE-RESUME-SOC = 85.5\n\
         SOFT-LANDING-CHARGE = [95, 100]\n\
         SOFT-LANDING-DISCHARGE = [15, 5]\n\
         SOC-MODE = \"usable\"",
    );
    let c = parse(&text).unwrap();
    let b = &c.battery;
    assert!(b.continues_without_forbidding_pack());
    let p = &b.policy;
    let charge = p.derating.charge.unwrap();
    assert_eq!(charge.points(), &[(0.0, 0.2), (10.0, 1.0), (45.0, 1.0), (55.0, 0.0)]);
    assert_eq!(p.derating.discharge.unwrap().points(), &[(-20.0, 0.5), (0.0, 1.0)]);
    assert_eq!(
        p.charge_stop,
        Some(ChargeStop {
            stop: 90.0,
            resume: 85.5
        })
    );
    assert_eq!(p.soft_landing.charge, Some(Taper { from: 95.0, to: 100.0 }));
    assert_eq!(p.soft_landing.discharge, Some(Taper { from: 15.0, to: 5.0 }));
    assert_eq!(p.soc_mode, SocMode::Usable);
    let described = c.describe();
    for line in [
        "[battery] ON-PACK-FORBIDS = \"continue\"",
        "TEMPERATURE-DERATING-CHARGE = [[0, 0.2], [10, 1], [45, 1], [55, 0]]",
        "CHARGE-STOP-SOC / CHARGE-RESUME-SOC = stop at 90 %, resume below 85.5 %",
        "SOFT-LANDING-CHARGE = [95, 100] %, SOFT-LANDING-DISCHARGE = [15, 5] %",
        "[battery] SOC-MODE = \"usable\"",
    ] {
        assert!(described.contains(line), "{line:?} not in\n{described}");
    }
}

#[test]
fn a_stop_soc_alone_resumes_5_percent_lower() {
    let c = parse(&battery("CHARGE-STOP-SOC = 80")).unwrap();
    assert_eq!(
        c.battery.policy.charge_stop,
        Some(ChargeStop {
            stop: 80.0,
            resume: 75.0
        })
    );
}

#[test]
fn continue_is_refused_in_sum_mode() {
    let p = only_problem(&battery("LIMIT-MODE = \"sum\"\nON-PACK-FORBIDS = \"continue\""));
    assert_eq!(p.key, "[battery] ON-PACK-FORBIDS");
    assert_eq!((p.line, p.column), (9, 19));
    assert!(p.message.contains("needs LIMIT-MODE = \"share\""), "{}", p.message);
}

#[test]
fn a_misspelt_policy_key_gets_did_you_mean() {
    let p = only_problem(&battery("CHARGE-STOP-SCO = 90"));
    assert_eq!((p.line, p.column), (8, 1));
    assert!(p.message.contains("did you mean CHARGE-STOP-SOC?"), "{}", p.message);
}

#[test]
fn a_derating_factor_above_1_is_refused_as_it_would_raise() {
    let p = only_problem(&battery("TEMPERATURE-DERATING-CHARGE = [[0, 0.5], [10, 1.2]]"));
    assert_eq!(p.key, "[battery] TEMPERATURE-DERATING-CHARGE");
    assert_eq!((p.line, p.column), (8, 31));
    assert!(
        p.message.contains("point 2: the factor must be from 0 to 1"),
        "{}",
        p.message
    );
}

#[test]
fn derating_points_must_be_pairs_in_rising_temperature() {
    let p = only_problem(&battery("TEMPERATURE-DERATING-DISCHARGE = [[10, 1], [0, 0.5]]"));
    assert!(p.message.contains("strictly increasing"), "{}", p.message);
    let p = only_problem(&battery("TEMPERATURE-DERATING-DISCHARGE = [[10, 1, 2]]"));
    assert!(
        p.message.contains("a [degC, factor] pair, not 3 values"),
        "{}",
        p.message
    );
    let p = only_problem(&battery("TEMPERATURE-DERATING-DISCHARGE = 0.5"));
    assert!(p.message.contains("an array of [degC, factor] pairs"), "{}", p.message);
}

#[test]
fn a_resume_soc_not_below_the_stop_soc_is_refused() {
    let p = only_problem(&battery("CHARGE-STOP-SOC = 90\nCHARGE-RESUME-SOC = 90"));
    assert_eq!(p.key, "[battery] CHARGE-RESUME-SOC");
    assert_eq!((p.line, p.column), (9, 21));
    assert!(
        p.message.contains("must be below CHARGE-STOP-SOC (90)"),
        "{}",
        p.message
    );
    let p = only_problem(&battery("CHARGE-RESUME-SOC = 80"));
    assert!(p.message.contains("without CHARGE-STOP-SOC"), "{}", p.message);
}

#[test]
fn a_soft_landing_must_run_toward_full_for_charge_and_empty_for_discharge() {
    let p = only_problem(&battery("SOFT-LANDING-CHARGE = [100, 95]"));
    assert_eq!(p.key, "[battery] SOFT-LANDING-CHARGE");
    assert!(p.message.contains("soc_from below soc_to"), "{}", p.message);
    let p = only_problem(&battery("SOFT-LANDING-DISCHARGE = [5, 15]"));
    assert!(p.message.contains("soc_from above soc_to"), "{}", p.message);
    let p = only_problem(&battery("SOFT-LANDING-DISCHARGE = [15, 105]"));
    assert!(p.message.contains("out of range"), "{}", p.message);
}

#[test]
fn an_unknown_soc_mode_lists_the_allowed_ones() {
    let p = only_problem(&battery("SOC-MODE = \"average\""));
    assert!(p.message.contains("one of \"weighted\", \"usable\""), "{}", p.message);
}

#[test]
fn the_templates_policy_examples_are_valid_once_uncommented() {
    let keys = [
        "TEMPERATURE-DERATING-",
        "CHARGE-STOP-SOC",
        "CHARGE-RESUME-SOC",
        "SOFT-LANDING-",
    ];
    let mut uncommented = 0;
    let text: String = TEMPLATE
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if keys.iter().any(|k| rest.starts_with(k)) && rest.contains(" = ") => {
                uncommented += 1;
                format!("{rest}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    assert_eq!(uncommented, 6);
    let c = parse(&text).expect("the examples parse");
    let p = &c.battery.policy;
    assert!(p.derating.charge.is_some() && p.derating.discharge.is_some());
    assert_eq!(
        p.charge_stop,
        Some(ChargeStop {
            stop: 95.0,
            resume: 90.0
        })
    );
    assert_eq!(p.soft_landing.discharge, Some(Taper { from: 20.0, to: 5.0 }));
}
