//! A rollout as a state machine: the states a switch to a release goes
//! through, and every transition between them, in one place.
//!
//! ```text
//! preparing ─▶ release phase ─▶ starting ─▶ health ─▶ settling ─▶ switched ─▶ draining ─▶ done
//!     │              │              │          │          │
//!     └──────────────┴──────────────┴──────────┴──────────┴─▶ failed ─(passing cause, after a backoff)─▶ preparing
//! ```
//!
//! The machine does nothing by itself: the runner's loop calls
//! [`Rollout::advance`] at every turn with the time and with the [`Steps`]
//! that do the work (lay out the tree, start processes, check health,
//! switch the proxy). Each step returns at once; waiting is the loop's, so
//! the running release is supervised meanwhile and a newer release can
//! supersede a rollout at any point. Tests drive it with a clock and steps
//! of their own, without sleeping.
//!
//! A failure whose cause is the release (its release phase failed, a
//! process exited before it was healthy or while settling, it never became
//! healthy) is final: the machine stays failed until the runner is given a
//! new release or a restart. A failure whose cause is passing (no file
//! descriptors, a full disk, a ledger that does not answer) is tried again
//! after a backoff that doubles up to [`MAX_RETRY_DELAY`].

use std::time::{Duration, Instant};

use crate::model::{FailureCause, RolloutStage};

/// The wait before the first retry of a rollout that failed for a passing
/// cause.
pub(crate) const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between retries.
pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Why a step failed, and whether trying again could help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failed {
    pub(crate) reason: String,
    pub(crate) cause: FailureCause,
}

impl Failed {
    /// A failure that is the release's.
    pub(crate) fn release(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), cause: FailureCause::Release }
    }

    /// A failure that trying again could mend.
    pub(crate) fn passing(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), cause: FailureCause::Passing }
    }

    /// A failure of `error`, passing if some cause in its chain is.
    pub(crate) fn of(error: &(dyn std::error::Error + 'static)) -> Self {
        Self { reason: crate::error_chain(error), cause: cause_of(error) }
    }
}

/// What a prepared release needs of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prepared {
    /// Whether a release phase runs before the processes start.
    pub(crate) release_phase: bool,
    /// How long the new web processes have to become healthy.
    pub(crate) health_timeout: Duration,
    /// How long every new process must stay up before the switch.
    pub(crate) settle: Duration,
}

/// The work of each state. Every method returns at once.
pub(crate) trait Steps {
    /// Lays out the release's tree and reads what it needs to start.
    fn prepare(&mut self) -> Result<Prepared, Failed>;
    /// Starts the release phase.
    fn start_release_phase(&mut self) -> Result<(), Failed>;
    /// `None` while the release phase runs; how it ended once it has.
    fn release_phase_ended(&mut self) -> Option<Result<(), Failed>>;
    /// Starts every process of the formation.
    fn start_processes(&mut self) -> Result<(), Failed>;
    /// `Ok(None)` once every new web process is healthy, `Ok(Some(what))`
    /// while one is not yet (what it has not done, e.g. "web.1 did not
    /// accept connections on port 5000"), `Err` if one exited.
    fn healthy(&mut self) -> Result<Option<String>, Failed>;
    /// A failure if one of the new processes has exited.
    fn exited(&mut self) -> Option<Failed>;
    /// Points the proxy at the new processes and retires the old ones.
    fn switch(&mut self);
    /// Whether the old release's processes are all stopped.
    fn drained(&mut self) -> bool;
    /// Stops whatever this rollout started.
    fn abandon(&mut self);
}

/// Where a rollout is, with what each state needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Preparing,
    ReleasePhase,
    Starting,
    Health { deadline: Instant },
    Settling { until: Instant },
    Switched,
    Draining,
    Done,
    Failed { failed: Failed, retry_at: Option<Instant> },
}

/// What changed at a call of [`Rollout::advance`], for the runner to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The rollout entered this stage.
    Entered(RolloutStage),
    /// It failed; with a passing cause, it is tried again at `retry_at`.
    Failed { failed: Failed, retry_at: Option<Instant> },
    /// It is over: the old release's processes are gone.
    Done,
}

/// One rollout of one release.
#[derive(Debug)]
pub(crate) struct Rollout {
    /// What it rolls out (`v5`), for its fail points.
    label: String,
    state: State,
    prepared: Option<Prepared>,
    /// Attempts made, the current one included.
    attempt: u32,
}

impl Rollout {
    /// A rollout of `label` (`v5`) about to prepare.
    pub(crate) fn new(label: &str) -> Self {
        Self { label: label.to_owned(), state: State::Preparing, prepared: None, attempt: 1 }
    }

    /// Its stage; `None` once done.
    pub(crate) fn stage(&self) -> Option<RolloutStage> {
        stage_of(&self.state)
    }

    /// The attempt under way (1 for the first).
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The failure it is in, if it is, and when it is tried again.
    pub(crate) fn failure(&self) -> Option<(&Failed, Option<Instant>)> {
        match &self.state {
            State::Failed { failed, retry_at } => Some((failed, *retry_at)),
            _ => None,
        }
    }

    /// Whether the switch has happened (or the whole rollout is over).
    pub(crate) fn switched(&self) -> bool {
        matches!(self.state, State::Switched | State::Draining | State::Done)
    }

    /// Makes every transition that `now` and `steps` allow, and says which.
    pub(crate) fn advance(&mut self, now: Instant, steps: &mut dyn Steps) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            // `rollout-v5-health`: in that state, about to act on it.
            if let Some(stage) = self.stage() {
                crate::fail_point::check(&format!("rollout-{}-{}", self.label, stage.name().replace(' ', "-")));
            }
            let Some(next) = self.next(now, steps) else { break };
            events.push(match &next {
                State::Failed { failed, retry_at } => Event::Failed { failed: failed.clone(), retry_at: *retry_at },
                State::Done => Event::Done,
                _ => Event::Entered(stage_of(&next).expect("only Done has no stage")),
            });
            if matches!(next, State::Preparing) {
                self.attempt += 1;
            }
            self.state = next;
        }
        events
    }

    /// Stops what a rollout that has not switched yet started: a newer
    /// release supersedes it. After the switch there is nothing to stop
    /// (the old release's processes drain on their own).
    pub(crate) fn cancel(&mut self, steps: &mut dyn Steps) {
        if matches!(self.state, State::ReleasePhase | State::Starting | State::Health { .. } | State::Settling { .. }) {
            steps.abandon();
        }
        self.state = State::Done;
    }

    /// The one place of every transition: the state after this one, or
    /// `None` while it waits.
    fn next(&mut self, now: Instant, steps: &mut dyn Steps) -> Option<State> {
        let fail = |failed: Failed, steps: &mut dyn Steps, attempt: u32| {
            steps.abandon();
            let retry_at = (failed.cause == FailureCause::Passing).then(|| now + retry_delay(attempt));
            State::Failed { failed, retry_at }
        };
        Some(match &self.state {
            State::Preparing => match steps.prepare() {
                Ok(prepared) => {
                    self.prepared = Some(prepared);
                    if prepared.release_phase {
                        match steps.start_release_phase() {
                            Ok(()) => State::ReleasePhase,
                            Err(failed) => fail(failed, steps, self.attempt),
                        }
                    } else {
                        State::Starting
                    }
                }
                // Nothing was started yet, but what prepare made is its own
                // to clean: abandoning is harmless.
                Err(failed) => fail(failed, steps, self.attempt),
            },
            State::ReleasePhase => match steps.release_phase_ended()? {
                Ok(()) => State::Starting,
                Err(failed) => fail(failed, steps, self.attempt),
            },
            State::Starting => match steps.start_processes() {
                Ok(()) => State::Health { deadline: now + self.prepared?.health_timeout },
                Err(failed) => fail(failed, steps, self.attempt),
            },
            State::Health { deadline } => match steps.healthy() {
                Ok(None) => State::Settling { until: now + self.prepared?.settle },
                Ok(Some(what)) if now >= *deadline => {
                    let timeout = self.prepared?.health_timeout.as_secs();
                    fail(Failed::release(format!("{what} within {timeout} s")), steps, self.attempt)
                }
                Ok(Some(_)) => return None,
                Err(failed) => fail(failed, steps, self.attempt),
            },
            State::Settling { until } => match steps.exited() {
                Some(failed) => fail(failed, steps, self.attempt),
                None if now >= *until => {
                    steps.switch();
                    State::Switched
                }
                None => return None,
            },
            State::Switched => State::Draining,
            State::Draining if steps.drained() => State::Done,
            State::Failed { retry_at: Some(at), .. } if now >= *at => State::Preparing,
            State::Draining | State::Failed { .. } | State::Done => return None,
        })
    }
}

/// The stage a state is reported as; `None` once done.
fn stage_of(state: &State) -> Option<RolloutStage> {
    Some(match state {
        State::Preparing => RolloutStage::Preparing,
        State::ReleasePhase => RolloutStage::ReleasePhase,
        State::Starting => RolloutStage::Starting,
        State::Health { .. } => RolloutStage::Health,
        State::Settling { .. } => RolloutStage::Settling,
        State::Switched => RolloutStage::Switched,
        State::Draining => RolloutStage::Draining,
        State::Failed { .. } => RolloutStage::Failed,
        State::Done => return None,
    })
}

/// The wait before attempt `attempt + 1`: [`FIRST_RETRY_DELAY`], doubled
/// for each attempt made, up to [`MAX_RETRY_DELAY`].
fn retry_delay(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    (FIRST_RETRY_DELAY * 2u32.pow(doublings)).min(MAX_RETRY_DELAY)
}

/// Whether `error` is passing: somewhere in its chain an I/O error that
/// says the machine is short of something for now (file descriptors,
/// memory, disk space, processes), or a ledger that does not answer.
fn cause_of(error: &(dyn std::error::Error + 'static)) -> FailureCause {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.raw_os_error().is_some_and(is_passing_errno)
        {
            return FailureCause::Passing;
        }
        if let Some(crate::ledger::LedgerError::Unavailable { retryable: true, .. }) =
            error.downcast_ref::<crate::ledger::LedgerError>()
        {
            return FailureCause::Passing;
        }
        next = error.source();
    }
    FailureCause::Release
}

/// The errnos of a machine short of something, for now.
pub(crate) fn is_passing_errno(errno: i32) -> bool {
    use rustix::io::Errno;
    [Errno::MFILE, Errno::NFILE, Errno::NOSPC, Errno::NOMEM, Errno::AGAIN, Errno::DQUOT, Errno::NOBUFS]
        .iter()
        .any(|passing| passing.raw_os_error() == errno)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// Steps whose outcomes the test sets, recording what was asked of them.
    #[derive(Default)]
    struct Script {
        prepare: VecDeque<Result<Prepared, Failed>>,
        release_phase: VecDeque<Option<Result<(), Failed>>>,
        healthy: VecDeque<Result<Option<String>, Failed>>,
        exited: Option<Failed>,
        drained: bool,
        done: Vec<&'static str>,
    }

    impl Steps for Script {
        fn prepare(&mut self) -> Result<Prepared, Failed> {
            self.done.push("prepare");
            self.prepare.pop_front().expect("a prepare outcome")
        }
        fn start_release_phase(&mut self) -> Result<(), Failed> {
            self.done.push("start release phase");
            Ok(())
        }
        fn release_phase_ended(&mut self) -> Option<Result<(), Failed>> {
            self.release_phase.pop_front().flatten()
        }
        fn start_processes(&mut self) -> Result<(), Failed> {
            self.done.push("start processes");
            Ok(())
        }
        fn healthy(&mut self) -> Result<Option<String>, Failed> {
            self.healthy.pop_front().unwrap_or_else(|| Ok(Some("web.1 did not accept connections".to_owned())))
        }
        fn exited(&mut self) -> Option<Failed> {
            self.exited.take()
        }
        fn switch(&mut self) {
            self.done.push("switch");
        }
        fn drained(&mut self) -> bool {
            self.drained
        }
        fn abandon(&mut self) {
            self.done.push("abandon");
        }
    }

    const PREPARED: Prepared =
        Prepared { release_phase: true, health_timeout: Duration::from_secs(30), settle: Duration::from_secs(3) };

    fn entered(stages: &[RolloutStage]) -> Vec<Event> {
        stages.iter().map(|&stage| Event::Entered(stage)).collect()
    }

    #[test]
    fn a_good_release_goes_through_every_stage_in_order_and_switches_after_settling() {
        let t0 = Instant::now();
        let mut script = Script { prepare: [Ok(PREPARED)].into(), ..Script::default() };
        let mut rollout = Rollout::new("v2");
        assert_eq!(rollout.advance(t0, &mut script), entered(&[RolloutStage::ReleasePhase]));
        script.release_phase.push_back(Some(Ok(())));
        script.healthy.push_back(Ok(None));
        let events = rollout.advance(t0, &mut script);
        assert_eq!(events, entered(&[RolloutStage::Starting, RolloutStage::Health, RolloutStage::Settling]));
        // Settling: nothing happens before the settle period is over.
        assert_eq!(rollout.advance(t0 + Duration::from_millis(2999), &mut script), []);
        assert!(!rollout.switched());
        let events = rollout.advance(t0 + Duration::from_secs(3), &mut script);
        assert_eq!(events, entered(&[RolloutStage::Switched, RolloutStage::Draining]));
        assert_eq!(rollout.stage(), Some(RolloutStage::Draining));
        script.drained = true;
        assert_eq!(rollout.advance(t0 + Duration::from_secs(4), &mut script), [Event::Done]);
        assert_eq!(rollout.stage(), None);
        assert_eq!(script.done, ["prepare", "start release phase", "start processes", "switch"]);
    }

    #[test]
    fn without_a_release_phase_it_starts_at_once() {
        let mut script =
            Script { prepare: [Ok(Prepared { release_phase: false, ..PREPARED })].into(), ..Script::default() };
        let events = Rollout::new("v2").advance(Instant::now(), &mut script);
        assert_eq!(events, entered(&[RolloutStage::Starting, RolloutStage::Health]));
        assert_eq!(script.done, ["prepare", "start processes"]);
    }

    #[test]
    fn a_failed_release_phase_is_final_and_stops_what_was_started() {
        let t0 = Instant::now();
        let mut script = Script { prepare: [Ok(PREPARED)].into(), ..Script::default() };
        let mut rollout = Rollout::new("v2");
        rollout.advance(t0, &mut script);
        script.release_phase.push_back(Some(Err(Failed::release("the release phase `migrate` failed (exit 1)"))));
        let events = rollout.advance(t0, &mut script);
        let failed = Failed::release("the release phase `migrate` failed (exit 1)");
        assert_eq!(events, [Event::Failed { failed, retry_at: None }]);
        assert!(rollout.failure().is_some_and(|(_, retry_at)| retry_at.is_none()), "final");
        // However long it waits, it is not tried again.
        assert_eq!(rollout.advance(t0 + Duration::from_secs(3600), &mut script), []);
        assert_eq!(script.done.last(), Some(&"abandon"));
        assert!(!script.done.contains(&"switch"));
    }

    #[test]
    fn a_web_process_never_healthy_fails_at_the_health_timeout_naming_the_check() {
        let t0 = Instant::now();
        let mut script =
            Script { prepare: [Ok(Prepared { release_phase: false, ..PREPARED })].into(), ..Script::default() };
        let mut rollout = Rollout::new("v2");
        rollout.advance(t0, &mut script);
        assert_eq!(rollout.advance(t0 + Duration::from_secs(29), &mut script), []);
        let events = rollout.advance(t0 + Duration::from_secs(30), &mut script);
        let failed = Failed::release("web.1 did not accept connections within 30 s");
        assert_eq!(events, [Event::Failed { failed, retry_at: None }]);
        assert_eq!(script.done, ["prepare", "start processes", "abandon"]);
    }

    #[test]
    fn a_process_that_exits_while_settling_fails_the_rollout_before_the_switch() {
        let t0 = Instant::now();
        let mut script = Script {
            prepare: [Ok(Prepared { release_phase: false, ..PREPARED })].into(),
            healthy: [Ok(None)].into(),
            ..Script::default()
        };
        let mut rollout = Rollout::new("v2");
        assert_eq!(rollout.stage(), Some(RolloutStage::Preparing));
        rollout.advance(t0, &mut script);
        assert_eq!(rollout.stage(), Some(RolloutStage::Settling));
        script.exited = Some(Failed::release("worker.1 exited while settling (exit status: 1)"));
        let events = rollout.advance(t0 + Duration::from_secs(1), &mut script);
        assert!(matches!(&events[..], [Event::Failed { retry_at: None, .. }]), "{events:?}");
        assert!(!script.done.contains(&"switch"));
        assert_eq!(script.done.last(), Some(&"abandon"));
    }

    #[test]
    fn a_passing_failure_is_retried_with_a_doubling_backoff_then_succeeds() {
        let t0 = Instant::now();
        let emfile = Failed::passing("Too many open files");
        let mut script = Script {
            prepare: [Err(emfile.clone()), Err(emfile.clone()), Err(emfile.clone()), Ok(PREPARED)].into(),
            ..Script::default()
        };
        let mut rollout = Rollout::new("v2");
        let events = rollout.advance(t0, &mut script);
        assert_eq!(events, [Event::Failed { failed: emfile.clone(), retry_at: Some(t0 + Duration::from_secs(1)) }]);
        assert!(rollout.failure().is_some_and(|(_, retry_at)| retry_at.is_some()), "tried again");
        assert_eq!(rollout.advance(t0 + Duration::from_millis(999), &mut script), []);
        let t1 = t0 + Duration::from_secs(1);
        let events = rollout.advance(t1, &mut script);
        let retry_at = Some(t1 + Duration::from_secs(2));
        assert_eq!(
            events,
            [Event::Entered(RolloutStage::Preparing), Event::Failed { failed: emfile.clone(), retry_at }]
        );
        assert_eq!(rollout.attempt(), 2);
        let t2 = t1 + Duration::from_secs(2);
        let events = rollout.advance(t2, &mut script);
        let retry_at = Some(t2 + Duration::from_secs(4));
        assert_eq!(events[1], Event::Failed { failed: emfile, retry_at });
        let events = rollout.advance(t2 + Duration::from_secs(4), &mut script);
        assert_eq!(events, entered(&[RolloutStage::Preparing, RolloutStage::ReleasePhase]));
        assert_eq!(rollout.attempt(), 4);
    }

    #[test]
    fn the_retry_delay_doubles_up_to_thirty_seconds() {
        let delays: Vec<u64> = (1..=8).map(|attempt| retry_delay(attempt).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY_DELAY);
    }

    #[test]
    fn cancelling_before_the_switch_stops_the_new_processes_and_after_it_does_not() {
        let t0 = Instant::now();
        let mut script = Script { prepare: [Ok(PREPARED)].into(), ..Script::default() };
        let mut rollout = Rollout::new("v2");
        rollout.advance(t0, &mut script);
        rollout.cancel(&mut script);
        assert_eq!(rollout.stage(), None);
        assert_eq!(script.done.last(), Some(&"abandon"));

        let mut script = Script {
            prepare: [Ok(Prepared { settle: Duration::ZERO, ..PREPARED })].into(),
            release_phase: [Some(Ok(()))].into(),
            healthy: [Ok(None)].into(),
            ..Script::default()
        };
        let mut rollout = Rollout::new("v2");
        rollout.advance(t0, &mut script);
        assert_eq!(rollout.stage(), Some(RolloutStage::Draining));
        rollout.cancel(&mut script);
        assert!(!script.done.contains(&"abandon"), "{:?}", script.done);
    }

    #[test]
    fn causes_are_read_from_the_error_chain() {
        let emfile = std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        let wrapped = crate::run::RunError::Io { action: "read", path: "/x".into(), source: emfile };
        assert_eq!(Failed::of(&wrapped).cause, FailureCause::Passing);
        let explained = crate::shell::explain_spawn_error(std::io::Error::from_raw_os_error(
            rustix::io::Errno::MFILE.raw_os_error(),
        ));
        assert_eq!(Failed::of(&explained).cause, FailureCause::Passing, "an explained errno keeps its cause");
        assert!(Failed::of(&explained).reason.contains("EMFILE"), "{}", Failed::of(&explained).reason);
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let wrapped = crate::run::RunError::Io { action: "read", path: "/x".into(), source: missing };
        assert_eq!(Failed::of(&wrapped).cause, FailureCause::Release);
    }
}
