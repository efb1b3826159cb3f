//! The combiner (docs/combining.md) on arbitrary sequences of telegrams,
//! clock steps and setpoints, with arbitrary settings, checking the safety
//! rules on every combined state it makes and on every inverter's share:
//! limits never negative, never above the caps or an active setpoint; the
//! safe state allows no current, clears both enables and every request and
//! sets the system error bit; the degraded state sets the communication-fail
//! bit; nothing is made before a battery has reported; no NaN or infinity
//! reaches an output.
//!
//! Telegrams are built from raw frame payloads through the real decoder, so
//! only values a battery can actually send are combined.

#![no_main]

use bms_gateway::codec::{self, ERROR2_SYSTEM_ERROR, Message, WARNING2_INTERNAL_COMM_FAIL};
use bms_gateway::combine::{BatterySettings, Combined, Combiner, InverterShare, OnInputLost, SystemState};
use bms_gateway::frame::Frame;
use bms_gateway::setpoint::{LimitKind, LimitSetpoints, Scope, Setpoint, SetpointCommand};
use bms_gateway::telegram::Telegram;
use libfuzzer_sys::fuzz_target;

mod input;
use input::take;
use std::time::{Duration, Instant};

fn telegram(raw: &[u8]) -> Option<Telegram> {
    let decode = |id: u16, bytes: &[u8]| codec::decode(&Frame::standard(id, bytes)).ok();
    let Some(Message::Limits(limits)) = decode(codec::ID_LIMITS, &raw[0..8]) else {
        return None;
    };
    let Some(Message::StateOfCharge(soc)) = decode(codec::ID_SOC, &raw[8..12]) else {
        return None;
    };
    let Some(Message::Measurements(measurements)) = decode(codec::ID_MEASUREMENTS, &raw[12..18]) else {
        return None;
    };
    let Some(Message::Flags(flags)) = decode(codec::ID_FLAGS, &raw[18..23]) else {
        return None;
    };
    let requests = match decode(codec::ID_REQUESTS, &raw[23..24]) {
        Some(Message::Requests(r)) if raw[24] & 1 == 0 => Some(r),
        _ => None,
    };
    Some(Telegram {
        limits,
        soc,
        measurements,
        flags,
        requests,
        manufacturer: None,
        cells: None,
        energy: None,
        cell_readings: None,
    })
}

fn finite(c: &Combined) -> bool {
    let b = &c.battery;
    [
        b.v_charge_cmd,
        b.i_lim_charge,
        b.i_lim_discharge,
        b.soc,
        b.soh,
        b.v_avg,
        b.i_total,
        b.t_avg,
    ]
    .iter()
    .all(|v| v.is_finite())
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let Some(head) = take(&mut data, 8) else { return };
    let n = usize::from(head[0] % 4) + 1;
    let settings = BatterySettings {
        i_lim_charge: f64::from(head[1]) * 4.0,
        i_lim_discharge: f64::from(head[2]) * 4.0,
        i_tot_scaling: f64::from(head[3]) / 64.0,
        i_tot_offset: f64::from(head[4] as i8),
        stale_timeout: Duration::from_millis(500 + u64::from(head[5]) * 20),
        on_input_lost: if head[6] & 1 == 0 {
            OnInputLost::Degrade
        } else {
            OnInputLost::Stop
        },
        ..BatterySettings::default()
    };
    let share = InverterShare {
        i_lim_charge: f64::from(head[7]) * 2.0,
        i_lim_discharge: f64::from(head[7]) * 3.0,
        i_scaling: 0.5,
        i_offset: 1.0,
    };
    let capacities: Vec<f64> = (0..n).map(|k| 50.0 + 25.0 * k as f64).collect();
    let t0 = Instant::now();
    let mut now = t0;
    let mut combiner = Combiner::new(settings, &capacities, t0).with_inverters(&[share]);
    let mut system = LimitSetpoints::default();
    let mut own = LimitSetpoints::default();
    let mut reported = false;
    while let Some(op) = take(&mut data, 2) {
        let made = match op[0] % 5 {
            0 => {
                let Some(raw) = take(&mut data, 25) else { break };
                let Some(t) = telegram(raw) else { continue };
                reported = true;
                combiner.on_telegram(usize::from(op[1]) % n, t, now)
            }
            1 | 2 => {
                now += Duration::from_millis(u64::from(op[1]) * 25);
                let made = combiner.on_tick(now);
                // A tick at `now` handles everything due by then: a deadline
                // still due would wake the combiner thread without end.
                let next = combiner.next_deadline(now);
                assert!(
                    next.is_none_or(|at| at > now),
                    "still due after a tick: {next:?} at {now:?}"
                );
                made
            }
            3 => {
                let Some(arg) = take(&mut data, 2) else { break };
                let kind = if op[1] & 1 == 0 {
                    LimitKind::Charge
                } else {
                    LimitKind::Discharge
                };
                let setpoint = (op[1] & 2 == 0).then(|| Setpoint {
                    value: f64::from(arg[0]) * 4.0,
                    expires: (arg[1] != 0).then(|| now + Duration::from_millis(u64::from(arg[1]) * 50)),
                });
                system.set(kind, setpoint);
                let command = SetpointCommand {
                    scope: Scope::System,
                    kind,
                    setpoint,
                };
                combiner.apply(command, now)
            }
            _ => {
                let Some(arg) = take(&mut data, 1) else { break };
                let kind = if op[1] & 1 == 0 {
                    LimitKind::Charge
                } else {
                    LimitKind::Discharge
                };
                let setpoint = (op[1] & 2 == 0).then_some(Setpoint {
                    value: f64::from(arg[0]),
                    expires: None,
                });
                own.set(kind, setpoint);
                let command = SetpointCommand {
                    scope: Scope::Inverter(0),
                    kind,
                    setpoint,
                };
                combiner.apply(command, now)
            }
        };
        let Some(c) = made else { continue };
        assert!(reported, "a state before any battery reported: {c:?}");
        assert!(finite(&c), "{c:?}");
        assert!(c.inputs_online <= n);
        let b = &c.battery;
        assert!(
            b.i_lim_charge >= 0.0 && b.i_lim_charge <= settings.i_lim_charge,
            "{c:?}"
        );
        assert!(
            b.i_lim_discharge >= 0.0 && b.i_lim_discharge <= settings.i_lim_discharge,
            "{c:?}"
        );
        assert!(b.v_charge_cmd > 0.0, "charge voltage 0 sent: {c:?}");
        for kind in [LimitKind::Charge, LimitKind::Discharge] {
            if let Some(v) = system.value_at(kind, now) {
                let limit = if kind == LimitKind::Charge {
                    b.i_lim_charge
                } else {
                    b.i_lim_discharge
                };
                assert!(limit <= v, "{kind:?} {limit} above the setpoint {v}: {c:?}");
            }
        }
        let lost = n - c.inputs_online;
        let want = match (c.inputs_online, lost, settings.on_input_lost) {
            (0, _, _) => SystemState::Safe,
            (_, 0, _) => SystemState::Ok,
            (_, _, OnInputLost::Degrade) => SystemState::Degraded,
            (_, _, OnInputLost::Stop) => SystemState::Safe,
        };
        assert_eq!(c.state, want, "{c:?}");
        match c.state {
            SystemState::Safe => {
                assert_eq!((b.i_lim_charge, b.i_lim_discharge), (0.0, 0.0), "{c:?}");
                assert!(!b.requests.charge_enable && !b.requests.discharge_enable, "{c:?}");
                let r = b.requests;
                assert!(
                    !r.force_charge_request && !r.force_charge_request_2 && !r.balancing_charge_request,
                    "{c:?}"
                );
                assert!(b.flags.error_flags_2 & ERROR2_SYSTEM_ERROR != 0, "{c:?}");
            }
            SystemState::Degraded => assert!(b.flags.warning_flags_2 & WARNING2_INTERNAL_COMM_FAIL != 0),
            SystemState::Ok => {}
        }
        let shaped: Vec<_> = combiner.shaped(now).collect();
        assert_eq!(shaped.len(), 1);
        let s = shaped[0].battery;
        assert!(s.i_lim_charge >= 0.0 && s.i_lim_charge <= share.i_lim_charge, "{s:?}");
        assert!(
            s.i_lim_discharge >= 0.0 && s.i_lim_discharge <= share.i_lim_discharge,
            "{s:?}"
        );
        assert!(s.i_lim_charge <= b.i_lim_charge * share.i_scaling + 1e-9, "{s:?}");
        if let Some(v) = own.value_at(LimitKind::Charge, now) {
            assert!(s.i_lim_charge <= v);
        }
        assert!(s.i_total.is_finite());
    }
});
