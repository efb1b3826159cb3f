//! The dead-interface rule, transition by transition, with time passed in;
//! expected instants and intervals are worked out by hand from spec section
//! 17 (RECOVER-AFTER, doubled per failed bounce, at most 10 minutes).

use super::*;
use proptest::prelude::*;

const AFTER: Duration = Duration::from_secs(30);

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// A rule that heard a frame at `t0`.
fn heard_at(t0: Instant) -> DeadLink {
    let mut rule = DeadLink::new(AFTER);
    assert_eq!(rule.observe(Observation::FrameReceived, t0), None);
    rule
}

#[test]
fn silence_means_nothing_before_the_first_frame() {
    let t0 = Instant::now();
    let mut rule = DeadLink::new(AFTER);
    assert_eq!(rule.poll(t0 + s(3600)), None);
    assert_eq!(rule.phase(), Phase::Watching);
}

#[test]
fn silent_for_recover_after_is_bounced() {
    let t0 = Instant::now();
    let mut rule = heard_at(t0);
    assert_eq!(rule.poll(t0 + s(30) - ms(1)), None);
    assert_eq!(
        rule.poll(t0 + s(30)),
        Some(Decision::Bounce {
            reason: Reason::Silent,
            attempt: 1
        })
    );
    assert_eq!(
        rule.phase(),
        Phase::Recovering {
            reason: Reason::Silent,
            attempts: 1,
            bounced_at: t0 + s(30)
        }
    );
}

#[test]
fn each_frame_restarts_the_silence() {
    let t0 = Instant::now();
    let mut rule = heard_at(t0);
    rule.observe(Observation::FrameReceived, t0 + s(20));
    assert_eq!(rule.poll(t0 + s(49)), None);
    assert!(matches!(rule.poll(t0 + s(50)), Some(Decision::Bounce { .. })));
}

#[test]
fn successful_sends_do_not_hide_a_deaf_receiver() {
    let t0 = Instant::now();
    let mut rule = heard_at(t0);
    for n in 1..=30 {
        rule.observe(Observation::SendSucceeded, t0 + s(n));
    }
    assert_eq!(
        rule.poll(t0 + s(30)),
        Some(Decision::Bounce {
            reason: Reason::Silent,
            attempt: 1
        })
    );
}

#[test]
fn every_send_failing_for_recover_after_is_bounced() {
    let t0 = Instant::now();
    // Never heard anything (an inverter that never talks): only the sends count.
    let mut rule = DeadLink::new(AFTER);
    rule.observe(Observation::SendFailed, t0);
    rule.observe(Observation::SendFailed, t0 + s(10));
    assert_eq!(rule.poll(t0 + s(29)), None);
    assert_eq!(
        rule.poll(t0 + s(30)),
        Some(Decision::Bounce {
            reason: Reason::TransmitFailing,
            attempt: 1
        })
    );
}

#[test]
fn one_send_that_goes_out_restarts_the_failing_spell() {
    let t0 = Instant::now();
    let mut rule = DeadLink::new(AFTER);
    rule.observe(Observation::SendFailed, t0);
    rule.observe(Observation::SendSucceeded, t0 + s(10));
    rule.observe(Observation::SendFailed, t0 + s(20));
    assert_eq!(rule.poll(t0 + s(49)), None);
    assert!(matches!(
        rule.poll(t0 + s(50)),
        Some(Decision::Bounce {
            reason: Reason::TransmitFailing,
            ..
        })
    ));
}

#[test]
fn a_controller_stopped_for_recover_after_is_bounced() {
    let t0 = Instant::now();
    let mut rule = DeadLink::new(AFTER);
    rule.observe(Observation::ControllerStopped, t0);
    // A second report of the same state does not restart the clock.
    rule.observe(Observation::ControllerStopped, t0 + s(15));
    assert_eq!(rule.poll(t0 + s(29)), None);
    assert_eq!(
        rule.poll(t0 + s(30)),
        Some(Decision::Bounce {
            reason: Reason::ControllerStopped,
            attempt: 1
        })
    );
}

#[test]
fn a_controller_restarted_by_the_kernel_is_left_alone() {
    let t0 = Instant::now();
    let mut rule = DeadLink::new(AFTER);
    rule.observe(Observation::ControllerStopped, t0);
    rule.observe(Observation::ControllerRunning, t0 + ms(100));
    assert_eq!(rule.poll(t0 + s(3600)), None);
}

#[test]
fn a_reopened_port_starts_every_clock_again() {
    let t0 = Instant::now();
    let mut rule = heard_at(t0);
    rule.observe(Observation::SendFailed, t0);
    rule.observe(Observation::ControllerStopped, t0);
    // Unplugged at 0, back and reopened at 100 s: judged from 100 s on.
    assert_eq!(rule.observe(Observation::Opened, t0 + s(100)), None);
    assert_eq!(rule.poll(t0 + s(129)), None);
    assert_eq!(
        rule.poll(t0 + s(130)),
        Some(Decision::Bounce {
            reason: Reason::Silent,
            attempt: 1
        })
    );
    // Opening is no proof of life after a bounce either.
    assert_eq!(rule.observe(Observation::Opened, t0 + s(131)), None);
    assert!(matches!(rule.phase(), Phase::Recovering { .. }));
    // A rule that never heard anything still does not judge silence.
    let mut rule = DeadLink::new(AFTER);
    rule.observe(Observation::Opened, t0);
    assert_eq!(rule.poll(t0 + s(3600)), None);
}

#[test]
fn the_most_telling_reason_is_given() {
    let t0 = Instant::now();
    let mut rule = heard_at(t0);
    rule.observe(Observation::SendFailed, t0);
    rule.observe(Observation::ControllerStopped, t0);
    assert_eq!(
        rule.poll(t0 + s(30)),
        Some(Decision::Bounce {
            reason: Reason::ControllerStopped,
            attempt: 1
        })
    );
    let mut rule = heard_at(t0);
    rule.observe(Observation::SendFailed, t0);
    assert_eq!(
        rule.poll(t0 + s(30)),
        Some(Decision::Bounce {
            reason: Reason::TransmitFailing,
            attempt: 1
        })
    );
}

#[test]
fn a_frame_after_a_bounce_for_silence_is_a_recovery() {
    let t0 = Instant::now();
    let mut rule = heard_at(t0);
    rule.poll(t0 + s(30));
    assert_eq!(
        rule.observe(Observation::FrameReceived, t0 + s(31)),
        Some(Decision::Recovered {
            reason: Reason::Silent,
            attempts: 1
        })
    );
    assert_eq!(rule.phase(), Phase::Watching);
    // Healthy again: the next silent spell starts at attempt 1, RECOVER-AFTER
    // after the last frame.
    assert_eq!(rule.poll(t0 + s(60)), None);
    assert_eq!(
        rule.poll(t0 + s(61)),
        Some(Decision::Bounce {
            reason: Reason::Silent,
            attempt: 1
        })
    );
}

#[test]
fn a_send_is_no_proof_that_a_deaf_receiver_recovered() {
    let t0 = Instant::now();
    let mut rule = heard_at(t0);
    rule.poll(t0 + s(30));
    assert_eq!(rule.observe(Observation::SendSucceeded, t0 + s(31)), None);
    assert_eq!(rule.observe(Observation::ControllerRunning, t0 + s(32)), None);
    assert!(matches!(rule.phase(), Phase::Recovering { .. }));
}

#[test]
fn a_send_after_a_bounce_for_failing_sends_is_a_recovery() {
    let t0 = Instant::now();
    let mut rule = DeadLink::new(AFTER);
    rule.observe(Observation::SendFailed, t0);
    rule.poll(t0 + s(30));
    assert_eq!(rule.observe(Observation::FrameReceived, t0 + s(31)), None);
    assert_eq!(rule.observe(Observation::SendFailed, t0 + s(32)), None);
    assert_eq!(
        rule.observe(Observation::SendSucceeded, t0 + s(33)),
        Some(Decision::Recovered {
            reason: Reason::TransmitFailing,
            attempts: 1
        })
    );
}

#[test]
fn any_life_after_a_bounce_for_a_stopped_controller_is_a_recovery() {
    for life in [
        Observation::ControllerRunning,
        Observation::FrameReceived,
        Observation::SendSucceeded,
    ] {
        let t0 = Instant::now();
        let mut rule = DeadLink::new(AFTER);
        rule.observe(Observation::ControllerStopped, t0);
        rule.poll(t0 + s(30));
        assert_eq!(
            rule.observe(life, t0 + s(31)),
            Some(Decision::Recovered {
                reason: Reason::ControllerStopped,
                attempts: 1
            }),
            "{life:?}"
        );
    }
}

#[test]
fn no_traffic_within_recover_after_of_a_bounce_is_a_failed_recovery() {
    let t0 = Instant::now();
    let mut rule = heard_at(t0);
    rule.poll(t0 + s(30)); // bounce 1 at 30 s
    assert_eq!(rule.poll(t0 + s(60) - ms(1)), None);
    // Judged at 30 + 30 = 60 s; the next bounce 2 x 30 s after the first, at 90 s.
    assert_eq!(
        rule.poll(t0 + s(60)),
        Some(Decision::RecoveryFailed {
            reason: Reason::Silent,
            attempts: 1,
            next_bounce_in: s(30)
        })
    );
    assert_eq!(
        rule.phase(),
        Phase::BackingOff {
            reason: Reason::Silent,
            attempts: 1,
            next_at: t0 + s(90)
        }
    );
    assert_eq!(rule.poll(t0 + s(90) - ms(1)), None);
    assert_eq!(
        rule.poll(t0 + s(90)),
        Some(Decision::Bounce {
            reason: Reason::Silent,
            attempt: 2
        })
    );
}

#[test]
fn traffic_while_backing_off_is_a_recovery() {
    let t0 = Instant::now();
    let mut rule = heard_at(t0);
    rule.poll(t0 + s(30));
    rule.poll(t0 + s(60));
    assert_eq!(
        rule.observe(Observation::FrameReceived, t0 + s(70)),
        Some(Decision::Recovered {
            reason: Reason::Silent,
            attempts: 1
        })
    );
    assert_eq!(rule.phase(), Phase::Watching);
    assert_eq!(rule.poll(t0 + s(90)), None);
}

#[test]
fn an_interface_that_stays_dead_is_bounced_on_the_back_off_schedule() {
    // Last frame at 0, RECOVER-AFTER 30 s: bounce at 30, then intervals of
    // 60, 120, 240, 480, then 600 (the cap) for ever.
    let expected = [30, 90, 210, 450, 930, 1530, 2130, 2730];
    let t0 = Instant::now();
    let mut rule = heard_at(t0);
    let mut bounces = Vec::new();
    for second in 0..=2730 {
        while let Some(d) = rule.poll(t0 + s(second)) {
            if let Decision::Bounce { attempt, .. } = d {
                bounces.push((second, attempt));
            }
        }
    }
    let want: Vec<(u64, u32)> = expected.iter().zip(1..).map(|(&t, n)| (t, n)).collect();
    assert_eq!(bounces, want);
}

#[test]
fn a_late_poll_catches_up_one_step_at_a_time() {
    let t0 = Instant::now();
    let mut rule = heard_at(t0);
    rule.poll(t0 + s(30));
    let late = t0 + s(1000);
    assert_eq!(
        rule.poll(late),
        Some(Decision::RecoveryFailed {
            reason: Reason::Silent,
            attempts: 1,
            next_bounce_in: Duration::ZERO
        })
    );
    assert_eq!(
        rule.poll(late),
        Some(Decision::Bounce {
            reason: Reason::Silent,
            attempt: 2
        })
    );
    assert_eq!(rule.poll(late), None);
}

#[test]
fn the_deadline_is_when_the_next_decision_may_come() {
    let t0 = Instant::now();
    let mut rule = DeadLink::new(AFTER);
    assert_eq!(rule.deadline(), None);
    rule.observe(Observation::SendSucceeded, t0);
    assert_eq!(rule.deadline(), None);
    rule.observe(Observation::FrameReceived, t0);
    assert_eq!(rule.deadline(), Some(t0 + s(30)));
    rule.observe(Observation::SendFailed, t0 - s(10));
    assert_eq!(rule.deadline(), Some(t0 + s(20)));
    rule.poll(t0 + s(20)); // bounce 1 (failing sends)
    assert_eq!(rule.deadline(), Some(t0 + s(50)));
    rule.poll(t0 + s(50)); // failed; bounce 2 at 20 + 60 s
    assert_eq!(rule.deadline(), Some(t0 + s(80)));
}

#[test]
fn retry_intervals_double_up_to_ten_minutes_but_never_below_recover_after() {
    assert_eq!(retry_interval(s(30), 1), s(60));
    assert_eq!(retry_interval(s(30), 4), s(480));
    assert_eq!(retry_interval(s(30), 5), s(600));
    assert_eq!(retry_interval(s(30), 100), s(600));
    assert_eq!(retry_interval(s(2), 1), s(4));
    assert_eq!(retry_interval(s(2), 8), s(512));
    assert_eq!(retry_interval(s(2), 9), s(600));
    assert_eq!(retry_interval(s(3600), 1), s(3600));
    assert_eq!(retry_interval(s(400), 1), s(600));
}

#[test]
fn settings_default_to_off_and_thirty_seconds() {
    let d = RecoverySettings::default();
    assert_eq!((d.mode, d.after), (RecoverMode::Off, s(30)));
    assert_eq!((RecoverMode::Off.name(), RecoverMode::Bounce.name()), ("off", "bounce"));
}

fn observation() -> impl Strategy<Value = Option<Observation>> {
    prop_oneof![
        3 => Just(None),
        2 => Just(Some(Observation::FrameReceived)),
        1 => Just(Some(Observation::SendSucceeded)),
        2 => Just(Some(Observation::SendFailed)),
        1 => Just(Some(Observation::ControllerStopped)),
        1 => Just(Some(Observation::ControllerRunning)),
        1 => Just(Some(Observation::Opened)),
    ]
}

/// The schedule, computed independently: `after`, 2 x `after`, 4 x ...,
/// at most 600 s unless `after` itself is longer.
fn schedule(after: Duration, failed: u32) -> Duration {
    let mut wait = after;
    for _ in 0..failed {
        wait = (wait * 2).min(s(600));
    }
    wait.max(after)
}

proptest! {
    #[test]
    fn bounces_never_come_faster_than_the_back_off_schedule(
        after_s in 2u64..120,
        steps in prop::collection::vec((0u64..400_000, observation()), 1..300),
    ) {
        let after = s(after_s);
        let t0 = Instant::now();
        let mut rule = DeadLink::new(after);
        let mut now = t0;
        // (when, attempt) of the last bounce, and whether it was followed by
        // a recovery.
        let mut last: Option<(Instant, u32)> = None;
        let mut recovered_since = false;
        for (step_ms, seen) in steps {
            now += ms(step_ms);
            let mut decisions = Vec::new();
            if let Some(seen) = seen {
                decisions.extend(rule.observe(seen, now));
            }
            // Nothing is decided before the deadline the rule gives.
            if rule.deadline().is_none_or(|due| now < due) {
                let mut copy = rule.clone();
                prop_assert_eq!(copy.poll(now), None);
            }
            while let Some(d) = rule.poll(now) {
                decisions.push(d);
                prop_assert!(decisions.len() < 4, "poll does not settle: {decisions:?}");
            }
            for d in decisions {
                match d {
                    Decision::Recovered { .. } => recovered_since = true,
                    Decision::RecoveryFailed { .. } => {}
                    Decision::Bounce { attempt, .. } => {
                        if let Some((then, before)) = last {
                            let gap = now - then;
                            prop_assert!(gap >= after, "two bounces {gap:?} apart, RECOVER-AFTER {after:?}");
                            if recovered_since {
                                prop_assert_eq!(attempt, 1);
                            } else {
                                prop_assert_eq!(attempt, before + 1);
                                let due = schedule(after, before);
                                prop_assert!(gap >= due, "bounce {attempt} {gap:?} after the last, due after {due:?}");
                            }
                        } else {
                            prop_assert_eq!(attempt, 1);
                        }
                        last = Some((now, attempt));
                        recovered_since = false;
                    }
                }
            }
        }
    }
}
