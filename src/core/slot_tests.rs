//! The slot machine's tests: the full state × event table, the behaviours over time, and a
//! property test over random event sequences against a simulated process world.

use super::*;
use Event::*;
use SlotAction::*;

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

const TERM: i32 = signal::TERM;
const KILL: i32 = signal::KILL;
const CONT: i32 = signal::CONT;

/// Drives a slot through events at `t0`, asserting each step does what the builder expects.
fn build(settings: SlotSettings, t0: Instant, events: &[Event]) -> Slot {
    let mut slot = Slot::new(settings, t0);
    for event in events {
        slot.handle(event.clone(), t0);
    }
    slot
}

/// Every state the table starts from, with its label.
fn states(t0: Instant) -> Vec<(&'static str, Slot)> {
    let plain = SlotSettings::default;
    let finish = || SlotSettings { has_finish: true, ..SlotSettings::default() };
    let fragile = || SlotSettings { crash_limit: 1, ..SlotSettings::default() };
    let crash = LeaderExited(ExitStatus::Code(1));
    vec![
        ("down", build(plain(), t0, &[])),
        ("spawning", build(plain(), t0, &[Start])),
        ("starting", build(plain(), t0, &[Start, Spawned(Pid(100))])),
        ("up", build(plain(), t0, &[Start, Spawned(Pid(100)), Ready])),
        ("stopping", build(plain(), t0, &[Start, Spawned(Pid(100)), Ready, Stop])),
        (
            "stopping-drained",
            build(plain(), t0, &[Start, Spawned(Pid(100)), Ready, Stop, LeaderExited(ExitStatus::Signaled(15))]),
        ),
        ("crashed", build(plain(), t0, &[Start, Spawned(Pid(100)), Ready, crash.clone()])),
        ("finish-pending", build(finish(), t0, &[Start, Spawned(Pid(100)), Ready, crash.clone(), GroupGone])),
        (
            "finishing",
            build(finish(), t0, &[Start, Spawned(Pid(100)), Ready, crash.clone(), GroupGone, FinishStarted(Pid(200))]),
        ),
        ("backoff", build(plain(), t0, &[Start, Spawned(Pid(100)), Ready, crash.clone(), GroupGone])),
        ("failed", build(fragile(), t0, &[Start, Spawned(Pid(100)), crash, GroupGone])),
    ]
}

/// What a row expects: the same state exactly (the event makes no sense there), or the
/// named state after it, with the actions.
#[derive(Debug)]
enum Then {
    Same,
    To(StateName, Vec<SlotAction>),
}

fn to(name: StateName, actions: &[SlotAction]) -> Then {
    Then::To(name, actions.to_vec())
}

#[test]
fn the_builders_reach_the_states_they_name() {
    let t0 = Instant::now();
    let names: Vec<(&str, StateName)> = states(t0).iter().map(|(label, s)| (*label, s.state().name())).collect();
    use StateName as S;
    assert_eq!(
        names,
        [
            ("down", S::Down),
            ("spawning", S::Starting),
            ("starting", S::Starting),
            ("up", S::Up),
            ("stopping", S::Stopping),
            ("stopping-drained", S::Stopping),
            ("crashed", S::Stopping),
            ("finish-pending", S::Finishing),
            ("finishing", S::Finishing),
            ("backoff", S::Backoff),
            ("failed", S::Failed),
        ]
    );
}

/// Every state × every event, ten seconds after the state was reached (every deadline is
/// due; the services of the builders die as soon as they start, so their verdict backs off).
#[test]
fn every_state_by_every_event() {
    use StateName as S;
    let stop = [SignalGroup(Pid(100), TERM), SignalGroup(Pid(100), CONT)];
    let events: Vec<(&str, Event)> = vec![
        ("start", Start),
        ("stop", Stop),
        ("restart", Restart),
        ("shutdown", Shutdown),
        ("unload", Unload),
        ("spawned", Spawned(Pid(300))),
        ("spawn-failed", SpawnFailed(126, "permission denied".into())),
        ("spawn-deferred", SpawnDeferred("too many open files".into())),
        ("ready", Ready),
        ("leader-exited", LeaderExited(ExitStatus::Code(1))),
        ("group-gone", GroupGone),
        ("finish-started", FinishStarted(Pid(400))),
        ("finish-ended", FinishEnded(Some(ExitStatus::Code(0)))),
        ("tick", Tick),
    ];
    // Rows in the order of `states`; columns in the order of `events`:
    // start, stop, restart, shutdown, unload, spawned, spawn-failed, spawn-deferred, ready,
    // leader-exited, group-gone, finish-started, finish-ended, tick.
    #[rustfmt::skip]
    let table: Vec<(&str, Vec<Then>)> = vec![
        ("down", vec![
            to(S::Starting, &[Spawn]), Then::Same, to(S::Starting, &[Spawn]), Then::Same, to(S::Down, &[Forget]),
            Then::Same, Then::Same, Then::Same, Then::Same, Then::Same,
            Then::Same, Then::Same, Then::Same, Then::Same,
        ]),
        // A transient: the shell answers a spawn at once, so only the intent can change here.
        ("spawning", vec![
            Then::Same, to(S::Starting, &[]), Then::Same, Then::Same, to(S::Starting, &[]),
            to(S::Starting, &[]), to(S::Backoff, &[]), to(S::Backoff, &[]), Then::Same, Then::Same,
            Then::Same, Then::Same, Then::Same, Then::Same,
        ]),
        ("starting", vec![
            Then::Same, to(S::Stopping, &stop), to(S::Stopping, &stop), to(S::Stopping, &stop), to(S::Stopping, &stop),
            Then::Same, Then::Same, Then::Same, to(S::Up, &[]), to(S::Stopping, &[SignalGroup(Pid(100), KILL)]),
            Then::Same, Then::Same, Then::Same, to(S::Up, &[]),
        ]),
        ("up", vec![
            Then::Same, to(S::Stopping, &stop), to(S::Stopping, &stop), to(S::Stopping, &stop), to(S::Stopping, &stop),
            Then::Same, Then::Same, Then::Same, Then::Same, to(S::Stopping, &[SignalGroup(Pid(100), KILL)]),
            Then::Same, Then::Same, Then::Same, Then::Same,
        ]),
        ("stopping", vec![
            to(S::Stopping, &[]), Then::Same, to(S::Stopping, &[]), Then::Same, to(S::Stopping, &[]),
            Then::Same, Then::Same, Then::Same, Then::Same, to(S::Stopping, &[]),
            Then::Same, Then::Same, Then::Same, to(S::Stopping, &[SignalGroup(Pid(100), KILL)]),
        ]),
        // The leader died at the stop signal; the rest of its group must still be killed.
        ("stopping-drained", vec![
            to(S::Stopping, &[]), Then::Same, to(S::Stopping, &[]), Then::Same, to(S::Stopping, &[]),
            Then::Same, Then::Same, Then::Same, Then::Same, Then::Same,
            to(S::Down, &[]), Then::Same, Then::Same, to(S::Stopping, &[SignalGroup(Pid(100), KILL)]),
        ]),
        ("crashed", vec![
            Then::Same, to(S::Stopping, &[]), Then::Same, to(S::Stopping, &[]), to(S::Stopping, &[]),
            Then::Same, Then::Same, Then::Same, Then::Same, Then::Same,
            to(S::Backoff, &[]), Then::Same, Then::Same, Then::Same,
        ]),
        ("finish-pending", vec![
            Then::Same, to(S::Finishing, &[]), Then::Same, to(S::Finishing, &[]), to(S::Finishing, &[]),
            Then::Same, Then::Same, Then::Same, Then::Same, Then::Same,
            Then::Same, to(S::Finishing, &[]), to(S::Backoff, &[]), Then::Same,
        ]),
        ("finishing", vec![
            Then::Same, to(S::Finishing, &[]), Then::Same, to(S::Finishing, &[]), to(S::Finishing, &[]),
            Then::Same, Then::Same, Then::Same, Then::Same, Then::Same,
            Then::Same, Then::Same, to(S::Backoff, &[]), to(S::Finishing, &[SignalGroup(Pid(200), KILL)]),
        ]),
        ("backoff", vec![
            to(S::Starting, &[Spawn]), to(S::Down, &[]), to(S::Starting, &[Spawn]), to(S::Down, &[]), to(S::Down, &[Forget]),
            Then::Same, Then::Same, Then::Same, Then::Same, Then::Same,
            Then::Same, Then::Same, Then::Same, to(S::Starting, &[Spawn]),
        ]),
        ("failed", vec![
            to(S::Starting, &[Spawn]), to(S::Down, &[]), to(S::Starting, &[Spawn]), Then::Same, to(S::Failed, &[Forget]),
            Then::Same, Then::Same, Then::Same, Then::Same, Then::Same,
            Then::Same, Then::Same, Then::Same, Then::Same,
        ]),
    ];
    let t0 = Instant::now();
    let now = at(t0, 10_000);
    let starts = states(t0);
    assert_eq!(starts.len(), table.len());
    let mut checked = 0;
    for ((label, slot), (row_label, row)) in starts.into_iter().zip(table) {
        assert_eq!(label, row_label);
        assert_eq!(row.len(), events.len(), "row {label}");
        for ((event_label, event), then) in events.iter().zip(row) {
            let mut next = slot.clone();
            let actions = next.handle(event.clone(), now);
            let cell = format!("{label} × {event_label}");
            match then {
                Then::Same => {
                    assert_eq!(actions, vec![], "{cell}: actions");
                    assert_eq!(next.state(), slot.state(), "{cell}: must leave the state unchanged");
                    assert_eq!(next.wanted_up(), slot.wanted_up(), "{cell}: must leave wanted unchanged");
                }
                Then::To(name, want) => {
                    assert_eq!(actions, want, "{cell}: actions");
                    assert_eq!(next.state().name(), name, "{cell}: next state ({:?})", next.state());
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 11 * 14);
}

/// What is wanted after each operator event, from a running slot.
#[test]
fn wanted_is_kept_apart_from_the_state() {
    let t0 = Instant::now();
    let cases = [(Start, true), (Stop, false), (Restart, true), (Shutdown, true), (Unload, false)];
    for (event, wanted) in cases {
        let mut slot = build(SlotSettings::default(), t0, &[Start, Spawned(Pid(100)), Ready]);
        slot.handle(event.clone(), at(t0, 5));
        assert_eq!(slot.wanted_up(), wanted, "{event:?}");
    }
}

/// A slot that was started at t0 and is running as pid 100.
fn running(t0: Instant, settings: SlotSettings) -> Slot {
    let mut slot = Slot::new(settings, t0);
    assert_eq!(slot.handle(Start, t0), vec![Spawn]);
    slot.handle(Spawned(Pid(100)), t0);
    slot
}

#[test]
fn readiness_by_timer_or_by_notification() {
    let t0 = Instant::now();
    let mut timer = running(t0, SlotSettings::default());
    assert_eq!(timer.deadline(), Some(at(t0, 1000)));
    timer.handle(Tick, at(t0, 999));
    assert_eq!(timer.state().name(), StateName::Starting);
    timer.handle(Tick, at(t0, 1000));
    assert_eq!(timer.state().name(), StateName::Up);
    assert!(timer.snapshot().ready);

    let mut notified = running(t0, SlotSettings { notification: true, ..SlotSettings::default() });
    assert_eq!(notified.deadline(), None);
    notified.handle(Tick, at(t0, 60_000));
    assert_eq!(notified.state().name(), StateName::Starting);
    notified.handle(Ready, at(t0, 10));
    assert_eq!(notified.state().name(), StateName::Up);
}

#[test]
fn stop_signals_the_group_then_kills_it_at_timeout_kill_even_after_the_leader_died() {
    let t0 = Instant::now();
    let mut slot = running(t0, SlotSettings { down_signal: signal::INT, ..SlotSettings::default() });
    assert_eq!(slot.handle(Stop, at(t0, 10)), vec![SignalGroup(Pid(100), signal::INT), SignalGroup(Pid(100), CONT)]);
    // The leader dies at once; a member of its group ignores the signal.
    assert_eq!(slot.handle(LeaderExited(ExitStatus::Signaled(2)), at(t0, 20)), vec![]);
    assert!(slot.draining());
    assert_eq!(slot.handle(Tick, at(t0, 3009)), vec![]);
    assert_eq!(slot.handle(Tick, at(t0, 3010)), vec![SignalGroup(Pid(100), KILL)]);
    // A late second tick does nothing.
    assert_eq!(slot.handle(Tick, at(t0, 4000)), vec![]);
    assert_eq!(slot.state().name(), StateName::Stopping, "not down until the group is gone");
    assert_eq!(slot.handle(GroupGone, at(t0, 3012)), vec![]);
    assert_eq!(slot.state(), &State::Down);
    assert!(!slot.snapshot().wanted_up);
}

#[test]
fn start_during_stop_respawns_once_after_the_group_is_gone() {
    let t0 = Instant::now();
    let mut slot = running(t0, SlotSettings::default());
    slot.handle(Stop, at(t0, 1500));
    assert_eq!(slot.handle(Start, at(t0, 1501)), vec![]);
    assert_eq!(slot.handle(Start, at(t0, 1502)), vec![]);
    assert_eq!(slot.handle(LeaderExited(ExitStatus::Signaled(15)), at(t0, 1600)), vec![]);
    assert_eq!(slot.handle(GroupGone, at(t0, 1600)), vec![Spawn]);
    slot.handle(Spawned(Pid(101)), at(t0, 1600));
    assert_eq!(slot.snapshot().restarts, 0, "an asked-for restart is not a crash");
}

#[test]
fn a_crash_kills_the_rest_of_the_group_and_waits_for_it_before_respawning() {
    let t0 = Instant::now();
    let mut slot = running(t0, SlotSettings::default());
    slot.handle(Tick, at(t0, 1000)); // up
    assert_eq!(slot.handle(LeaderExited(ExitStatus::Signaled(9)), at(t0, 5000)), vec![SignalGroup(Pid(100), KILL)]);
    assert_eq!(slot.state().name(), StateName::Stopping);
    // Nothing spawns while a member of the old group lives, whatever is asked.
    assert_eq!(slot.handle(Start, at(t0, 5001)), vec![]);
    assert_eq!(slot.handle(Tick, at(t0, 9000)), vec![]);
    // The group is gone: it ran 5 s, so it is started again at once.
    assert_eq!(slot.handle(GroupGone, at(t0, 5002)), vec![Spawn]);
    assert_eq!(slot.snapshot().restarts, 1);
}

/// Immediate respawn against backoff, by how long the service ran before it died:
/// (ran ms, the backoff deadline in ms, or none: started again at once).
#[test]
fn a_service_that_ran_a_second_is_restarted_at_once_and_a_quick_death_backs_off() {
    let cases: [(u64, Option<u64>); 5] =
        [(1000, None), (30_000, None), (999, Some(1499)), (100, Some(1000)), (0, Some(1000))];
    for (ran, backoff_until) in cases {
        let t0 = Instant::now();
        let mut slot = running(t0, SlotSettings::default());
        slot.handle(LeaderExited(ExitStatus::Code(1)), at(t0, ran));
        let actions = slot.handle(GroupGone, at(t0, ran));
        match backoff_until {
            None => assert_eq!(actions, vec![Spawn], "ran {ran} ms: at once"),
            Some(ms) => {
                assert_eq!(actions, vec![], "ran {ran} ms");
                // 0.5 s after the death, but never less than 1 s after the last spawn.
                assert_eq!(slot.state(), &State::Backoff { until: at(t0, ms) }, "ran {ran} ms");
            }
        }
    }
}

/// Deaths in quick succession double the delay; a run of a second starts it over.
#[test]
fn backoff_doubles_on_deaths_in_quick_succession_and_starts_over_after_a_second_up() {
    let t0 = Instant::now();
    // (a high crash limit: this is about the backoff, not the crash-loop guard)
    let mut slot = running(t0, SlotSettings { crash_limit: 100, ..SlotSettings::default() });
    let mut spawned = t0;
    let mut gaps = Vec::new();
    for _ in 0..5 {
        let died = spawned + Duration::from_millis(100);
        slot.handle(LeaderExited(ExitStatus::Code(1)), died);
        slot.handle(GroupGone, died);
        let spawn_at = slot.deadline().expect("a backoff deadline");
        assert_eq!(slot.handle(Tick, spawn_at), vec![Spawn]);
        slot.handle(Spawned(Pid(200)), spawn_at);
        gaps.push(spawn_at.duration_since(spawned).as_millis());
        spawned = spawn_at;
    }
    // 0.5, 1, 2, 4, 8 s after each death, and never closer than 1 s between spawns.
    assert_eq!(gaps, [1000, 1100, 2100, 4100, 8100]);
    // Up for a second and a half: the next death is restarted at once...
    let died = spawned + Duration::from_millis(1500);
    slot.handle(LeaderExited(ExitStatus::Code(1)), died);
    assert_eq!(slot.handle(GroupGone, died), vec![Spawn]);
    slot.handle(Spawned(Pid(201)), died);
    // ... and the backoff starts over at its first step.
    let quick = died + Duration::from_millis(100);
    slot.handle(LeaderExited(ExitStatus::Code(1)), quick);
    slot.handle(GroupGone, quick);
    assert_eq!(slot.deadline(), Some(died + Duration::from_millis(1000)), "the first step again");
}

#[test]
fn crash_loop_guard_fails_the_slot_after_the_limit() {
    let t0 = Instant::now();
    let mut slot = running(t0, SlotSettings { crash_limit: 3, ..SlotSettings::default() });
    let mut now = t0;
    let mut last = Vec::new();
    for _ in 0..3 {
        now += Duration::from_millis(100);
        slot.handle(LeaderExited(ExitStatus::Code(1)), now);
        last = slot.handle(GroupGone, now);
        if let Some(spawn_at) = slot.deadline() {
            now = spawn_at;
            assert_eq!(slot.handle(Tick, now), vec![Spawn]);
            slot.handle(Spawned(Pid(300)), now);
        }
    }
    assert_eq!(slot.state().name(), StateName::Failed);
    assert!(matches!(&last[..], [PermanentFailure(reason)] if reason.starts_with("crash loop: 3 deaths")));
    assert!(!slot.snapshot().wanted_up);
    assert!(slot.snapshot().failure.is_some());
    // It stays down: no deadline, ticks do nothing.
    assert_eq!(slot.deadline(), None);
    assert_eq!(slot.handle(Tick, now + Duration::from_secs(600)), vec![]);
    // An explicit start gives it a fresh chance (keeping the spawn spacing).
    assert_eq!(slot.handle(Start, now + Duration::from_secs(5)), vec![Spawn]);
    assert_eq!(slot.snapshot().failure, None);
}

#[test]
fn permanent_failures() {
    // (exit status, finish status, failed at once)
    let cases = [
        (ExitStatus::Code(78), None, true),
        (ExitStatus::Code(1), Some(ExitStatus::Code(125)), true),
        (ExitStatus::Code(1), Some(ExitStatus::Code(0)), false),
        (ExitStatus::Signaled(9), None, false),
    ];
    for (status, finish, failed) in cases {
        let t0 = Instant::now();
        let settings = SlotSettings { has_finish: finish.is_some(), ..SlotSettings::default() };
        let mut slot = running(t0, settings);
        slot.handle(LeaderExited(status), at(t0, 10));
        let actions = slot.handle(GroupGone, at(t0, 10));
        let actions = match finish {
            Some(finish_status) => {
                let code = match status {
                    ExitStatus::Code(c) => c,
                    ExitStatus::Signaled(_) => 256,
                };
                assert_eq!(actions, vec![RunFinish { code, signal: 0 }]);
                slot.handle(FinishStarted(Pid(400)), at(t0, 11));
                slot.handle(FinishEnded(Some(finish_status)), at(t0, 20))
            }
            None => actions,
        };
        assert_eq!(slot.state().name() == StateName::Failed, failed, "{status} {finish:?}: {actions:?}");
        assert_eq!(matches!(actions.first(), Some(PermanentFailure(_))), failed, "{status} {finish:?}");
    }
}

#[test]
fn finish_gets_256_and_the_signal_and_is_killed_at_its_timeout() {
    let t0 = Instant::now();
    let mut slot = running(t0, SlotSettings { has_finish: true, ..SlotSettings::default() });
    slot.handle(LeaderExited(ExitStatus::Signaled(15)), at(t0, 10));
    assert_eq!(slot.handle(GroupGone, at(t0, 10)), vec![RunFinish { code: 256, signal: 15 }]);
    slot.handle(FinishStarted(Pid(500)), at(t0, 10));
    assert_eq!(slot.state().name(), StateName::Finishing);
    assert_eq!(slot.handle(Tick, at(t0, 5010)), vec![SignalGroup(Pid(500), KILL)]);
    assert_eq!(slot.handle(FinishEnded(Some(ExitStatus::Signaled(9))), at(t0, 5011)), vec![]);
    assert_eq!(slot.state().name(), StateName::Backoff);
}

#[test]
fn spawns_are_at_least_one_second_apart() {
    let t0 = Instant::now();
    let mut slot = running(t0, SlotSettings::default());
    slot.handle(Stop, at(t0, 10));
    slot.handle(LeaderExited(ExitStatus::Signaled(15)), at(t0, 20));
    slot.handle(GroupGone, at(t0, 20));
    assert_eq!(slot.handle(Start, at(t0, 30)), vec![]);
    assert_eq!(slot.state(), &State::Backoff { until: at(t0, 1000) });
    assert_eq!(slot.handle(Tick, at(t0, 1000)), vec![Spawn]);
}

#[test]
fn unload_forgets_only_when_everything_is_gone() {
    let t0 = Instant::now();
    let mut down = Slot::new(SlotSettings::default(), t0);
    assert_eq!(down.handle(Unload, t0), vec![Forget]);

    let mut slot = running(t0, SlotSettings::default());
    assert_eq!(slot.handle(Unload, at(t0, 1)), vec![SignalGroup(Pid(100), TERM), SignalGroup(Pid(100), CONT)]);
    assert_eq!(slot.handle(Start, at(t0, 2)), vec![], "an unloading slot never starts again");
    assert_eq!(slot.handle(LeaderExited(ExitStatus::Signaled(15)), at(t0, 3)), vec![]);
    assert_eq!(slot.handle(GroupGone, at(t0, 4)), vec![Forget]);
}

#[test]
fn shutdown_brings_down_without_changing_what_is_wanted() {
    let t0 = Instant::now();
    let mut slot = running(t0, SlotSettings::default());
    assert_eq!(slot.handle(Shutdown, at(t0, 1)).len(), 2);
    slot.handle(LeaderExited(ExitStatus::Signaled(15)), at(t0, 2));
    assert_eq!(slot.handle(GroupGone, at(t0, 2)), vec![]);
    assert_eq!(slot.state(), &State::Down);
    assert!(slot.snapshot().wanted_up);
    assert_eq!(slot.handle(Start, at(t0, 3)), vec![], "no spawn during a shutdown");
}

/// A death counts toward the crash loop whether or not the slot had been declared ready:
/// on a slow machine the readiness timer must not hide a crash loop.
#[test]
fn deaths_after_ready_count_toward_the_crash_loop_too() {
    let t0 = Instant::now();
    let mut slot = running(t0, SlotSettings { crash_limit: 3, ..SlotSettings::default() });
    let mut now = t0;
    for death in 1..=3 {
        now += Duration::from_millis(1100);
        slot.handle(Tick, now);
        assert_eq!(slot.state().name(), StateName::Up, "ready by its timer");
        slot.handle(LeaderExited(ExitStatus::Code(1)), now);
        let actions = slot.handle(GroupGone, now);
        if death == 3 {
            assert!(
                matches!(&actions[..], [PermanentFailure(r)] if r.starts_with("crash loop: 3 deaths")),
                "{actions:?}"
            );
            return;
        }
        // It ran over a second: started again at once.
        assert_eq!(actions, vec![Spawn]);
        slot.handle(Spawned(Pid(900 + death)), now);
    }
    panic!("no crash loop");
}

#[test]
fn exit_codes_126_and_127_name_their_likely_cause() {
    assert!(describe(ExitStatus::Code(126), None).contains("noexec"));
    assert!(describe(ExitStatus::Code(127), None).contains("not found"));
    assert_eq!(describe(ExitStatus::Code(1), None), "exit status 1");
    assert!(describe(ExitStatus::Code(126), Some("mounted noexec")).ends_with("mounted noexec"));
}

#[test]
fn spawn_failure_counts_toward_the_crash_loop() {
    let t0 = Instant::now();
    let mut slot = Slot::new(SlotSettings { crash_limit: 2, ..SlotSettings::default() }, t0);
    assert_eq!(slot.handle(Start, t0), vec![Spawn]);
    assert_eq!(slot.handle(SpawnFailed(126, "permission denied".into()), t0), vec![]);
    assert_eq!(slot.state().name(), StateName::Backoff);
    assert_eq!(slot.handle(Tick, at(t0, 1000)), vec![Spawn]);
    let failed = slot.handle(SpawnFailed(126, "permission denied: noexec?".into()), at(t0, 1000));
    assert!(
        matches!(&failed[..], [PermanentFailure(reason)] if reason.contains("exit status 126: permission denied: noexec?")),
        "{failed:?}"
    );
}

/// Random event sequences against a simulated world of real-looking processes: groups
/// whose leader and members die on signals (some members ignore the stop signal), and time
/// that passes in random steps. Checks the invariants after every step.
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// One process group of the simulated world.
    #[derive(Debug, Clone)]
    struct Group {
        pgid: Pid,
        leader_alive: bool,
        /// A member that ignores the stop signal (only SIGKILL ends it).
        stubborn_alive: bool,
        /// The leader ignores the stop signal too.
        leader_stubborn: bool,
    }

    #[derive(Debug, Clone)]
    enum Step {
        Start,
        Stop,
        Restart,
        Ready,
        /// The leader dies by itself (a crash).
        Crash,
        /// The stubborn member dies by itself.
        MemberExits,
        /// Time passes, in ms.
        Wait(u64),
        /// The next spawn fails.
        FailNextSpawn,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::Start),
            3 => Just(Step::Stop),
            1 => Just(Step::Restart),
            2 => Just(Step::Ready),
            2 => Just(Step::Crash),
            1 => Just(Step::MemberExits),
            4 => (1u64..4000).prop_map(Step::Wait),
            1 => Just(Step::FailNextSpawn),
        ]
    }

    struct World {
        slot: Slot,
        now: Instant,
        groups: Vec<Group>,
        next_pid: i32,
        fail_next_spawn: bool,
        stubborn_spawns: bool,
        /// When an operator stop was given to a running slot that is still wanted down.
        stop_given: Option<Instant>,
        /// When each `run` was spawned.
        spawns: Vec<Instant>,
    }

    impl World {
        fn live_groups(&self) -> usize {
            self.groups.iter().filter(|g| g.leader_alive || g.stubborn_alive).count()
        }

        /// Feeds an event, carries out the actions the way the shell does, and lets the
        /// world react (deaths reaped and reported, as the loop does after waitpid) until
        /// nothing is left to do.
        fn feed(&mut self, event: Event) {
            let mut queue: VecDeque<SlotAction> = self.slot.handle(event, self.now).into();
            for _ in 0..64 {
                while let Some(action) = queue.pop_front() {
                    let answer = self.carry_out(action);
                    queue.extend(answer);
                }
                queue.extend(self.reap());
                if queue.is_empty() {
                    return;
                }
            }
            panic!("the slot and the world never settle");
        }

        fn carry_out(&mut self, action: SlotAction) -> Vec<SlotAction> {
            match action {
                SlotAction::Spawn if self.fail_next_spawn => {
                    self.fail_next_spawn = false;
                    self.slot.handle(SpawnFailed(126, "permission denied".into()), self.now)
                }
                SlotAction::Spawn => {
                    self.spawns.push(self.now);
                    self.next_pid += 1;
                    let pgid = Pid(self.next_pid);
                    self.groups.push(Group {
                        pgid,
                        leader_alive: true,
                        stubborn_alive: self.stubborn_spawns,
                        leader_stubborn: self.stubborn_spawns && self.next_pid % 2 == 0,
                    });
                    self.slot.handle(Spawned(pgid), self.now)
                }
                SlotAction::SignalGroup(pgid, sig) => {
                    if let Some(group) = self.groups.iter_mut().find(|g| g.pgid == pgid) {
                        if sig == KILL {
                            group.leader_alive = false;
                            group.stubborn_alive = false;
                        } else if sig != CONT && !group.leader_stubborn {
                            group.leader_alive = false;
                        }
                    }
                    Vec::new()
                }
                SlotAction::RunFinish { .. } => {
                    // A quick finish: started and ended at once.
                    self.next_pid += 1;
                    let mut actions = self.slot.handle(FinishStarted(Pid(self.next_pid)), self.now);
                    actions.extend(self.slot.handle(FinishEnded(Some(ExitStatus::Code(0))), self.now));
                    actions
                }
                SlotAction::Forget | SlotAction::PermanentFailure(_) => Vec::new(),
            }
        }

        /// Reports a dead leader and an empty group to the slot.
        fn reap(&mut self) -> Vec<SlotAction> {
            let mut actions = Vec::new();
            if let Some(leader) = self.slot.leader()
                && self.groups.iter().any(|g| g.pgid == leader && !g.leader_alive)
            {
                actions.extend(self.slot.handle(LeaderExited(ExitStatus::Signaled(15)), self.now));
            }
            if self.slot.draining() {
                let group = self.slot.group();
                if self.groups.iter().any(|g| Some(g.pgid) == group && !g.leader_alive && !g.stubborn_alive) {
                    actions.extend(self.slot.handle(GroupGone, self.now));
                }
            }
            actions
        }

        fn run(&mut self, step: &Step) {
            let running = matches!(self.slot.state().name(), StateName::Starting | StateName::Up);
            match step {
                Step::Start | Step::Restart => {
                    self.stop_given = None;
                    self.feed(if matches!(step, Step::Start) { Start } else { Restart });
                }
                Step::Stop => {
                    if running && self.stop_given.is_none() {
                        self.stop_given = Some(self.now);
                    }
                    self.feed(Stop);
                }
                Step::Ready => self.feed(Ready),
                Step::Crash => {
                    if let Some(leader) = self.slot.leader()
                        && let Some(g) = self.groups.iter_mut().find(|g| g.pgid == leader)
                    {
                        g.leader_alive = false;
                    }
                    self.feed(Tick);
                }
                Step::MemberExits => {
                    for g in &mut self.groups {
                        g.stubborn_alive = false;
                    }
                    self.feed(Tick);
                }
                Step::Wait(ms) => {
                    let end = self.now + Duration::from_millis(*ms);
                    // Wake at each deadline on the way, as the loop does.
                    while let Some(at) = self.slot.deadline().filter(|at| *at <= end) {
                        self.now = at.max(self.now);
                        self.feed(Tick);
                        if self.slot.deadline() == Some(at) {
                            panic!("a due deadline did not fire: {:?}", self.slot.state());
                        }
                    }
                    self.now = end;
                    self.feed(Tick);
                }
                Step::FailNextSpawn => self.fail_next_spawn = true,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn invariants_hold_for_any_sequence(
            steps in proptest::collection::vec(step(), 1..60),
            stubborn in any::<bool>(),
            has_finish in any::<bool>(),
        ) {
            let t0 = Instant::now();
            let settings = SlotSettings { has_finish, ..SlotSettings::default() };
            let mut world = World {
                slot: Slot::new(settings.clone(), t0),
                now: t0,
                groups: Vec::new(),
                next_pid: 100,
                fail_next_spawn: false,
                stubborn_spawns: stubborn,
                stop_given: None,
                spawns: Vec::new(),
            };
            for step in &steps {
                world.run(step);
                // Never two live process groups for one slot.
                prop_assert!(world.live_groups() <= 1, "two live groups after {:?}: {:?}", step, world.groups);
                // Spawns are at least MIN_SPAWN_SPACING apart.
                for pair in world.spawns.windows(2) {
                    prop_assert!(pair[1].duration_since(pair[0]) >= backoff::MIN_SPAWN_SPACING, "spawns {:?}", world.spawns);
                }
                // A stop ends in down (or failed) within timeout-kill plus the finish time,
                // once the world kills what SIGKILL kills.
                if let Some(given) = world.stop_given {
                    let bound = settings.timeout_kill + settings.timeout_finish;
                    if world.now.duration_since(given) > bound && !world.slot.wanted_up() {
                        let name = world.slot.state().name();
                        prop_assert!(
                            matches!(name, StateName::Down | StateName::Failed | StateName::Finishing),
                            "still {:?} {:?} after a stop", name, world.slot.state()
                        );
                    }
                }
                // Wanted is honoured once the backoff allows: a slot wanted up never sits
                // in backoff past its deadline, nor down.
                if world.slot.wanted_up() {
                    let name = world.slot.state().name();
                    prop_assert!(name != StateName::Down, "wanted up but down");
                    if let State::Backoff { until } = world.slot.state() {
                        prop_assert!(*until > world.now, "backoff past its deadline");
                    }
                }
            }
        }
    }
}
