//! One adaptive rate limit for ResolveCustomer per process, shared by every in-flight message, so
//! that concurrency never turns into a throttling storm.
//!
//! **Pacing.** Calls are spaced evenly at the current rate: the next call may go one interval
//! (1 / rate) after the previous one, computed from the rate at the moment it is due, so a rate
//! change (up or down) applies to the very next call rather than to a queue of pre-assigned slots.
//! An idle limiter banks no credit: a burst after a pause is still spaced.
//!
//! **Fairness by age.** Waiters are served oldest delivery first, not in arrival order: a caller
//! says when its delivery first queued for a call ([`AdaptiveRateLimiter::acquire_for`]), so a
//! throttled retry of an old delivery goes before every delivery that first queued after it, instead
//! of rejoining the back of the line behind fresh messages. Ties go first come first served. Only the
//! oldest waiter watches the clock; the others sleep until they become the oldest. A waiter whose
//! future is dropped leaves the line at once and wakes the next one, so it never blocks the others.
//! [`AdaptiveRateLimiter::waiting`] and [`AdaptiveRateLimiter::capacity`] let the worker receive only
//! what the rate can resolve within a delivery's retry budget.
//!
//! **Slow start.** Until the API first pushes back in earnest, every answered call adds one call per
//! second (the rate doubles each second it is used in full), so an unthrottled API is not held back
//! by a cautious starting rate.
//!
//! **Decrease by the share of throttled calls, not per throttle.** A throttle says one call per
//! second too many was sent, *or* that one token (or one hot account's token) is throttled on its
//! own: a few tokens throttled many times must not drag the whole process down while the quota is far
//! from reached. So throttles are counted over a window of one cool-down (`cooldown_ms`), which opens
//! at the first throttle after the previous window closed; within it
//!
//! ```text
//! share     = throttled first calls in the window / max(answers in the window, base rate × window)
//! hot       = the share of hot tokens (below), measured when it opened
//! new rate  = base rate × max(deepest, 1 − (share − hot))   if share > TOLERATED_SHARE (2%) + hot
//! ```
//!
//! where *base rate* is the rate when the window opened and *deepest* is `decrease_factor` (the
//! largest cut one window may make; 0.5 at most while still in slow start) and the rate only ever
//! goes down. Once the share passes the tolerance, each throttle but the hot tokens' takes about one
//! call per second off the rate, which is what a quota measures: sending R calls/s against a quota
//! Q gives (R − Q) throttles per second, so one window brings the rate down to about Q, never by
//! more than the factor at once, and the throttles of calls already sent (which arrive together)
//! are not counted twice. (Until 2026-12-07 only the share past the tolerance was cut: the rate
//! then stayed about 2% over the quota and was cut again every second or two.) A steady trickle of
//! throttles under the tolerated share does not move the rate at all; half the calls throttled
//! cuts it by the full factor. The denominator is at least the calls the rate allows in the
//! window, so a lone hot token retried while little else is sent counts as a small share, not as
//! 100%. A `cooldown_ms` of 0 gives every throttle its own window (every throttle cuts by the full
//! factor).
//!
//! **A careful probe near the last cut.** From the first cut on, each second of answered calls adds
//! `increase_per_sec`, but only a fifth of it ([`CAREFUL_INCREASE`]) while the rate is within 5%
//! below to 10% above the rate the last window cut at (the quota was met there a moment ago): each
//! throttle costs about a call per second, so the share of throttled calls in the steady state is
//! about the probe's increase over the quota, 5% of a quota of 20 calls/s at 1 call/s per second.
//! Further below (a deep cut) the full increase brings the rate back quickly; 10% past it the
//! quota has moved and the full increase goes on finding it, as TCP CUBIC grows slowly near the
//! window it last lost at and fast away from it. The slow start's landing and a learned rate a
//! task starts at are estimates, not cuts, and set no such rate (a landing under the quota would
//! otherwise climb at a fifth of the speed for long).
//!
//! **The slow start ends where the API's acceptance is.** The window that ends the slow start met a
//! quota the doubling rate had passed, by up to twice, or more when the API's bucket let a first
//! burst through. Cutting by a factor a window at a time would spend a second of throttles per
//! window on the way down, so that window lands at what the API accepted lately (the busiest of
//! the last three 100 ms slots of answers, scaled to a second; never below a quarter of its base),
//! when that is lower than its cut. Later windows cut by their share alone.
//!
//! **A hot token or the account's quota.** AWS throttles per account, so a quota throttles every
//! kind of call alike, and shows in other deliveries' *first* calls; a token throttled on its own
//! (a hot token, the emulator's `throttle: n`) is throttled on its first call and again on its
//! retries. So the caller says which call a throttle was ([`Call`]): a delivery's first call
//! ([`Call::First`]) counts in the window; its first retry after a throttled first call, throttled
//! again ([`Call::Repeat`]), counts nowhere but in the share of hot tokens: repeats per answer over
//! the last ten seconds. Under a quota a repeat is as rare as a throttle of a throttle (a few
//! percent of a few percent); each hot token makes one. That share is tolerated on top of the 2%:
//! with 5% of the tokens hot and a quota found, the windows tolerate 7%, so the hot tokens' first
//! calls do not cut the rate window after window (without it, the rate fell to a third of a quota
//! of 100 calls/s in the paused-time simulation), while the quota's own throttles past 2% still
//! do. In slow start, only a window of at least [`SLOW_START_EXIT_MIN_THROTTLES`] (4) throttled
//! first calls, whose share passes the hot share by `1 − SLOW_START_EXIT_CUT` (15 points) or whose
//! throttled first calls other than one pass [`SLOW_START_EXIT_FIRST_SHARE`] (15%), ends it: a few
//! hot tokens' first calls stay a small share of the fresh calls, or a handful at the first few
//! calls a second, and do not end the doubling for every other message. Tried before and taken
//! out (issue #23, BENCHMARKS.md): every retry's throttle fed back at a tenth of a first call's
//! weight, in full once first calls passed the tolerance. With 5% of the tokens hot their first
//! calls passed it now and then, their retries then counted in full, each cut was taken for the
//! quota and every later throttle cut again: the rate fell to a few calls a second and stayed.

//! **Decay while idle.** A rate is only known to be right while it is used: light traffic (a call
//! every few seconds, each answered) would otherwise raise it by a call per second per call, to
//! thousands of calls per second over weeks, and the first real burst would go out unpaced. So
//! while nobody waits for a turn, after [`IDLE_GRACE`], the part of the rate above
//! `initial_per_sec` halves every [`IDLE_HALF_LIFE`]; once it is back at the initial rate the
//! limiter starts over (slow start), as a fresh process would. A rate below the initial one (a quota
//! the API taught it) is kept: it is the safer figure for the next burst.
//!
//! **Starting where the fleet left off.** A process's limiter can start from what the fleet last
//! learned instead of `initial_per_sec` ([`Start::from_hint`], [`AdaptiveRateLimiter::adopt`]):
//! every task writes its rate to the store now and then while busy, with whether a window cut it
//! (a quota found) or it is a slow-start peak ([`AdaptiveRateLimiter::learned`];
//! `worker/fleet.rs`, `store/fleet.rs`), and a new task reads it once at start-up. A hint younger
//! than `rate_limit.learned_max_age_secs` is started at (clamped to min/max): a found quota in
//! congestion avoidance (it grows by `increase_per_sec`, not by doubling past the quota), a peak
//! in slow start from there (the API never pushed back below it). An older hint, or none, gives
//! the configured start; a hint never overrides what a limiter learned from calls of its own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::RateLimitSettings;

/// Share of the rate's calls in one window that may be throttled without lowering the rate, on top
/// of the measured share of hot tokens: sporadic throttles and a rate a point or two over the quota
/// cost a few retries, which is cheaper than giving up throughput. (5% until 2026-12-07, when the
/// hot tokens' share was not measured and this had to cover them: a quota was then held at about
/// 5% throttled.)
const TOLERATED_SHARE: f64 = 0.02;

/// The deepest cut of the window that ends the slow start: by then the rate may be up to twice the
/// quota (it doubles each second), so halving it is always allowed, whatever the configured factor.
const SLOW_START_DEEPEST: f64 = 0.5;

/// During slow start, only a window whose cut is at least this deep (a throttled share 15 points
/// over the hot tokens' share) ends it: a quota makes every call over it a throttle, so the share
/// climbs fast once the doubling rate passes it, while a few tokens throttled on their own (AWS
/// throttles per account; the emulator's scripted `throttle: n`) stay a small share and must not
/// end the doubling for every other message.
const SLOW_START_EXIT_CUT: f64 = 0.85;

/// Over how long the share of tokens throttled on their own is measured (see [`Call::Repeat`]).
const HOT_HORIZON_SLOTS: usize = 10;
const HOT_SLOT: Duration = Duration::from_secs(1);

/// Fewer answers than this over the horizon measure no share of hot tokens: a few calls a second
/// would make one hot token a large share.
const HOT_MIN_ANSWERS: u32 = 20;

/// The most the hot tokens' share may add to a window's tolerance: above it, what throttles is the
/// quota, whatever the tokens.
const HOT_MAX_SHARE: f64 = 0.25;

/// During slow start, a window whose throttled *first* calls alone pass this share ends it
/// promptly, whatever the retries: a few hot tokens' first calls are a small share of the fresh
/// calls (5% of the tokens: 5% of them), while a quota the doubling rate just passed throttles a
/// growing share of every kind of call.
const SLOW_START_EXIT_FIRST_SHARE: f64 = 0.15;

/// During slow start, no window with fewer throttled first calls than this ends it, whatever their
/// share: at the first few calls a second, the two or three hot tokens a first receive may hold
/// are a large share (a bench run ended its slow start at 8 calls a second that way, and took 85 s
/// to climb back to 40), while a quota the doubling rate passes throttles this many calls within a
/// fraction of a second. Not more: against a quota of 3 calls a second, 8 let the slow start
/// overshoot long enough to start the budgets of many deliveries whose calls then waited
/// (`receiving_follows_what_a_low_quota_can_take` sent valid tokens to the DLQ). A `cooldown_ms`
/// of 0 makes every throttle a window of its own, and so has no floor.
const SLOW_START_EXIT_MIN_THROTTLES: u32 = 4;

/// The lowest share of its base rate the window that ends the slow start may cut to, whatever the
/// last second's accepted calls say (a second with few answers in it measures little).
const SLOW_START_FLOOR: f64 = 0.25;

/// Near the rate of the last cut, the probe grows by this share of `increase_per_sec` (see the
/// module documentation). A fifth took the paused-time simulation's throttled share at a quota of
/// 20 calls/s from 4.6% to 1.0% in the steady state, goodput unchanged.
const CAREFUL_INCREASE: f64 = 0.2;

/// How long the line must stay empty before the rate starts to decay: the gaps of a paced burst
/// (or between two receive batches) are not idleness.
pub const IDLE_GRACE: Duration = Duration::from_secs(1);

/// While idle, the part of the rate above the initial rate halves this often: an hour of quiet
/// brings any rate back to the initial one, a minute takes three quarters of the excess off.
pub const IDLE_HALF_LIFE: Duration = Duration::from_secs(30);

/// What a limiter learned about the API, as tasks hand it on to one another through the store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Learned {
    /// Calls per second.
    pub rate: f64,
    /// `true`: a window cut the rate (the API's quota, found by throttles); `false`: the highest
    /// rate a slow start reached without being pushed back (the quota, if any, is above it).
    pub quota: bool,
}

/// How a limiter starts: at what rate, and whether in slow start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Start {
    pub rate: f64,
    pub slow_start: bool,
}

impl Start {
    /// The configured start: `initial_per_sec`, in slow start.
    pub fn configured(policy: &RatePolicy) -> Self {
        Start {
            rate: clamp(policy.initial, policy),
            slow_start: true,
        }
    }

    /// Where a new limiter starts given the fleet's learned rate (`hint`, written `age` ago) and
    /// the oldest hint it trusts (`max_age`; zero: none). A found quota is started at and kept
    /// (congestion avoidance, no doubling past it); a slow-start peak is started at and the
    /// doubling goes on from there (the API never pushed back below it). A hint too old, from the
    /// future by more than `max_age` (clocks apart), or not a usable rate falls back to the
    /// configured start. A peak below the configured start teaches nothing: the configured start.
    pub fn from_hint(
        policy: &RatePolicy,
        hint: Option<(Learned, Duration)>,
        max_age: Duration,
    ) -> Self {
        let configured = Start::configured(policy);
        let Some((learned, age)) = hint else {
            return configured;
        };
        if max_age.is_zero() || age > max_age {
            return configured;
        }
        if !learned.rate.is_finite() || learned.rate <= 0.0 {
            return configured;
        }
        let rate = clamp(learned.rate, policy);
        if learned.quota {
            Start {
                rate,
                slow_start: false,
            }
        } else {
            Start {
                rate: rate.max(configured.rate),
                slow_start: true,
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePolicy {
    pub initial: f64,
    pub min: f64,
    /// Hard ceiling; `None` lets the rate grow until the API pushes back.
    pub max: Option<f64>,
    /// The lowest multiplier one cool-down window may apply (the cut when most calls are throttled).
    pub decrease: f64,
    /// Calls per second added per second of successful calls at the current rate.
    pub increase: f64,
    /// The window throttles are counted over, and so the minimum time between two windows' cuts.
    pub cooldown: Duration,
}

impl RatePolicy {
    pub fn from_settings(s: &RateLimitSettings) -> Self {
        RatePolicy {
            initial: s.initial_per_sec,
            min: s.min_per_sec,
            max: (s.max_per_sec > 0.0).then_some(s.max_per_sec),
            decrease: s.decrease_factor,
            increase: s.increase_per_sec,
            cooldown: Duration::from_millis(s.cooldown_ms),
        }
    }
}

/// Which call of its delivery a throttled call was: AWS throttles per account, so an account over
/// its quota shows in every delivery's *first* call, while a token throttled on its own (a hot
/// token, the emulator's `throttle: n`) is throttled again on its retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// A delivery's first call (or a call with no retries of its own: a probe, a usage batch).
    First,
    /// A delivery's first retry after its first call was throttled, throttled again. Under a
    /// quota that happens as often as any call is throttled (a few percent of the few percent);
    /// a hot token does it every time: so these, per answer, measure the share of hot tokens,
    /// which the windows then tolerate on top of [`TOLERATED_SHARE`].
    Repeat,
}

/// The multiplier a window applies to its base rate after `throttles` of its `answers` were
/// throttles, when the base rate allows `expected_calls` in the window and `hot` is the measured
/// share of tokens throttled on their own: `1.0` means no cut. A share up to [`TOLERATED_SHARE`]
/// plus `hot` is tolerated; past it, the cut takes off the whole share but the hot tokens' (the
/// rate was over the quota by about that much), not only what passed the tolerance: a cut of the
/// excess alone left the rate 2% over the quota, to be cut again a second later.
fn window_cut(throttles: f64, answers: u32, expected_calls: f64, deepest: f64, hot: f64) -> f64 {
    let calls = f64::from(answers).max(throttles).max(expected_calls);
    if calls <= 0.0 || !throttles.is_finite() {
        return 1.0;
    }
    let share = throttles / calls;
    if share <= TOLERATED_SHARE + hot {
        return 1.0;
    }
    (1.0 - (share - hot)).max(deepest).min(1.0)
}

/// Throttles and answers counted since the current window opened.
#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Instant,
    base: f64,
    deepest: f64,
    /// The share of tokens throttled on their own when it opened, tolerated on top of
    /// [`TOLERATED_SHARE`] and not cut for.
    hot: f64,
    /// Opened during the slow start: its cut (if any) ends it.
    opened_in_slow_start: bool,
    /// Throttled first calls of deliveries: the account's quota speaks here.
    first_throttles: u32,
    answers: u32,
}

impl Window {
    /// This window's multiplier (see [`window_cut`]).
    fn cut(&self, expected_calls: f64) -> f64 {
        window_cut(
            f64::from(self.first_throttles),
            self.answers,
            expected_calls,
            self.deepest,
            self.hot,
        )
    }

    /// Whether the first calls alone show a quota past the slow start's exit share: a window of
    /// throttled first calls ends the doubling at once.
    fn first_calls_show_a_quota(&self, expected_calls: f64) -> bool {
        self.others_first_share(expected_calls) > SLOW_START_EXIT_FIRST_SHARE
    }

    /// The share of the window's calls that were throttled first calls, but for one: are *other*
    /// deliveries' first calls throttled too? One hot token's first call is a large share of a
    /// window at a few calls per second, and must not make its own retries count in full.
    fn others_first_share(&self, expected_calls: f64) -> f64 {
        let calls = f64::from(self.answers).max(expected_calls).max(1.0);
        f64::from(self.first_throttles.saturating_sub(1)) / calls
    }
}

/// Counts kept per slot of time over the last `N` slots, the newest one filling: recording and
/// reading cost the same whatever the rate.
#[derive(Debug)]
struct SlotRing<T, const N: usize> {
    slots: [T; N],
    slot: Duration,
    /// The start of the newest slot (`slots[newest]`); `None` before the first record.
    newest_from: Option<Instant>,
    newest: usize,
}

impl<T: Copy + Default, const N: usize> SlotRing<T, N> {
    fn new(slot: Duration) -> Self {
        SlotRing {
            slots: [T::default(); N],
            slot,
            newest_from: None,
            newest: 0,
        }
    }

    /// Moves the newest slot up to `now`, emptying the slots it passes.
    fn advance(&mut self, now: Instant) {
        let Some(from) = self.newest_from else {
            self.newest_from = Some(now);
            return;
        };
        let passed =
            (now.saturating_duration_since(from).as_nanos() / self.slot.as_nanos()) as usize;
        for _ in 0..passed.min(N) {
            self.newest = (self.newest + 1) % N;
            self.slots[self.newest] = T::default();
        }
        // A slot is at least 100 ms: far fewer than u32::MAX of them in any process's life.
        self.newest_from = Some(from + self.slot * u32::try_from(passed).unwrap_or(u32::MAX));
    }

    /// The newest slot, once the ring is moved up to `now`.
    fn newest(&mut self, now: Instant) -> &mut T {
        self.advance(now);
        &mut self.slots[self.newest]
    }

    /// The slot `back` slots before the newest (`back` < N).
    fn before_newest(&self, back: usize) -> T {
        self.slots[(self.newest + N - back % N) % N]
    }
}

/// Calls the API accepted, in slots of 100 ms over the last second.
#[derive(Debug)]
struct AcceptedRate(SlotRing<u32, ACCEPTED_SLOTS>);

const ACCEPTED_SLOTS: usize = 10;
const ACCEPTED_SLOT: Duration = Duration::from_millis(100);
/// How many whole slots before the newest [`AcceptedRate::per_second`] looks at.
const ACCEPTED_RECENT: usize = 3;

impl Default for AcceptedRate {
    fn default() -> Self {
        AcceptedRate(SlotRing::new(ACCEPTED_SLOT))
    }
}

impl AcceptedRate {
    fn record(&mut self, now: Instant) {
        let n = self.0.newest(now);
        *n = n.saturating_add(1);
    }

    /// Calls accepted per second lately: the busiest of the last [`ACCEPTED_RECENT`] whole slots,
    /// scaled to a second. Not the whole second's sum: a doubling rate that has just met a quota
    /// accepted less a second ago than it does now (a second's sum would land well under the
    /// quota), and a bucket's first burst is long spent.
    fn per_second(&mut self, now: Instant) -> f64 {
        self.0.advance(now);
        let per_slot = (1..=ACCEPTED_RECENT)
            .map(|back| self.0.before_newest(back))
            .max()
            .unwrap_or(0);
        f64::from(per_slot) * (Duration::from_secs(1).as_secs_f64() / ACCEPTED_SLOT.as_secs_f64())
    }
}

/// Answers and [`Call::Repeat`]s, one slot a second over the last [`HOT_HORIZON_SLOTS`] seconds.
#[derive(Debug)]
struct HotShare(SlotRing<(u32, u32), HOT_HORIZON_SLOTS>);

impl Default for HotShare {
    fn default() -> Self {
        HotShare(SlotRing::new(HOT_SLOT))
    }
}

impl HotShare {
    fn record(&mut self, now: Instant, answer: bool, repeat: bool) {
        let (answers, repeats) = self.0.newest(now);
        *answers = answers.saturating_add(u32::from(answer));
        *repeats = repeats.saturating_add(u32::from(repeat));
    }

    /// Repeats per answer over the horizon (0 with too few answers to say), at most
    /// [`HOT_MAX_SHARE`].
    fn share(&mut self, now: Instant) -> f64 {
        self.0.advance(now);
        let (answers, repeats) = self.0.slots.iter().fold((0u32, 0u32), |(a, r), &(sa, sr)| {
            (a.saturating_add(sa), r.saturating_add(sr))
        });
        if answers < HOT_MIN_ANSWERS {
            return 0.0;
        }
        (f64::from(repeats) / f64::from(answers)).min(HOT_MAX_SHARE)
    }
}

/// Where a waiter stands in line: when its delivery first queued, then arrival order.
type Place = (Instant, u64);

#[derive(Debug)]
struct State {
    rate: f64,
    /// When the last call was let through (the schedule the next one is spaced from).
    last_call: Option<Instant>,
    /// Calls let through so far: whether the limiter was busy since someone last looked.
    granted: u64,
    /// Slow start: no window has cut the rate yet.
    probing: bool,
    /// The rate the last cut was made at (where the quota was met), if any: the probe is careful
    /// near it (see [`careful_near`]).
    last_cut: Option<f64>,
    /// Answers that were not throttles, over the last second: what the API accepts.
    accepted: AcceptedRate,
    /// The share of tokens throttled on their own, over the last ten seconds.
    hot: HotShare,
    window: Option<Window>,
    /// Waiters, oldest delivery first; each is woken through its own `Notify`.
    line: BTreeMap<Place, Arc<Notify>>,
    arrivals: u64,
    /// From when idleness counts towards the decay (`None` while someone waits for a turn, or
    /// before the first call): the line emptied + [`IDLE_GRACE`], then the last decay.
    decay_from: Option<Instant>,
}

impl State {
    /// Applies the decay of the idle time up to `now` (see the module documentation).
    fn decay(&mut self, now: Instant, policy: &RatePolicy) {
        let Some(from) = self.decay_from.filter(|from| now > *from) else {
            return;
        };
        self.decay_from = Some(now);
        let initial = clamp(policy.initial, policy);
        let excess = self.rate - initial;
        if excess <= 0.0 {
            return;
        }
        let halvings = (now - from).as_secs_f64() / IDLE_HALF_LIFE.as_secs_f64();
        self.rate = initial + excess * 0.5f64.powf(halvings);
        if self.rate - initial < 0.5 {
            // Back where a fresh process starts: forget what the busy spell taught.
            self.rate = initial;
            self.probing = true;
            self.window = None;
            self.last_cut = None;
        }
    }

    /// Someone joins the line: the idle spell (if any) ends here.
    fn busy(&mut self, now: Instant, policy: &RatePolicy) {
        self.decay(now, policy);
        self.decay_from = None;
    }

    /// The line may just have emptied: idleness counts from here, after the grace.
    fn maybe_idle(&mut self, now: Instant) {
        if self.line.is_empty() && self.decay_from.is_none() {
            self.decay_from = Some(now + IDLE_GRACE);
        }
    }

    /// The oldest waiter may have something new to look at (its turn, or a new rate): wake it.
    fn wake_first(&self) {
        if let Some(first) = self.line.values().next() {
            first.notify_one();
        }
    }

    fn is_first(&self, place: &Place) -> bool {
        self.line.keys().next() == Some(place)
    }
}

#[derive(Debug)]
pub struct AdaptiveRateLimiter {
    policy: RatePolicy,
    state: Mutex<State>,
}

/// A place in line; leaving it (the waiting future dropped) hands the turn on.
struct Ticket<'a> {
    limiter: &'a AdaptiveRateLimiter,
    place: Place,
    served: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.served {
            return;
        }
        let mut s = self.limiter.lock();
        let was_first = s.is_first(&self.place);
        s.line.remove(&self.place);
        s.maybe_idle(Instant::now());
        if was_first {
            s.wake_first();
        }
    }
}

impl AdaptiveRateLimiter {
    pub fn new(policy: RatePolicy) -> Self {
        let rate = clamp(policy.initial, &policy);
        AdaptiveRateLimiter {
            policy,
            state: Mutex::new(State {
                rate,
                last_call: None,
                granted: 0,
                probing: true,
                last_cut: None,
                accepted: AcceptedRate::default(),
                hot: HotShare::default(),
                window: None,
                line: BTreeMap::new(),
                arrivals: 0,
                decay_from: None,
            }),
        }
    }

    /// The current rate, calls per second.
    pub fn rate(&self) -> f64 {
        self.state().rate
    }

    /// What this limiter has learned, to hand on to the fleet's next task: its rate, whether a
    /// window cut it (a quota found) or it is still in slow start (a peak), and how many calls it
    /// has let through so far (unchanged: it was not busy, and has nothing new to tell).
    pub fn learned(&self) -> (Learned, u64) {
        let s = self.state();
        let learned = Learned {
            rate: s.rate,
            quota: !s.probing,
        };
        (learned, s.granted)
    }

    /// Starts from `start` instead of the configured start (the fleet's learned rate, read at
    /// start-up). Only a limiter that has not let a call through yet takes it: once calls went out,
    /// what this process learns itself is worth more than a hint. Whether it took it.
    pub fn adopt(&self, start: Start) -> bool {
        let mut s = self.lock();
        if s.granted > 0 || s.window.is_some() {
            return false;
        }
        s.rate = clamp(start.rate, &self.policy);
        s.probing = start.slow_start;
        s.wake_first();
        true
    }

    /// How many callers are waiting for their turn right now.
    pub fn waiting(&self) -> usize {
        self.lock().line.len()
    }

    /// How many deliveries the current rate can give a call within `budget` (rate × budget, rounded
    /// down), but at least `floor`. The worker keeps the deliveries waiting for a call plus those in
    /// flight under this, so what it receives can be resolved before its budget runs out.
    pub fn capacity(&self, budget: Duration, floor: usize) -> usize {
        let calls = self.rate() * budget.as_secs_f64();
        // Float to int `as` saturates; the rate is finite and positive.
        (calls.floor() as usize).max(floor)
    }

    /// Waits until this caller may make one call, behind every caller already waiting (a fresh
    /// delivery). Same as `acquire_for(Instant::now())`.
    pub async fn acquire(&self) {
        self.acquire_for(Instant::now()).await;
    }

    /// Waits until this caller may make one call. `first_queued` is when the delivery this call is
    /// for first waited for a call (keep it across its retries): waiters are served oldest first, so
    /// a retry goes before every delivery that first queued after it. Dropping the future leaves
    /// the line without holding anyone up.
    pub async fn acquire_for(&self, first_queued: Instant) {
        let notify = Arc::new(Notify::new());
        let place = {
            let mut s = self.state();
            s.busy(Instant::now(), &self.policy);
            let place = (first_queued, s.arrivals);
            s.arrivals += 1;
            s.line.insert(place, notify.clone());
            place
        };
        let mut ticket = Ticket {
            limiter: self,
            place,
            served: false,
        };
        loop {
            let due = {
                let mut s = self.lock();
                if !s.is_first(&place) {
                    None
                } else {
                    let now = Instant::now();
                    let interval = interval(s.rate);
                    match s.last_call.map(|last| last + interval) {
                        Some(due) if due > now => Some(due),
                        due => {
                            // Late by less than one interval (timer granularity): keep the
                            // schedule so the rate is not eroded; later (idle): bank nothing.
                            let on_schedule = due.filter(|d| now.duration_since(*d) < interval);
                            s.last_call = Some(on_schedule.unwrap_or(now));
                            s.granted = s.granted.saturating_add(1);
                            s.line.remove(&place);
                            s.maybe_idle(now);
                            ticket.served = true;
                            s.wake_first();
                            return;
                        }
                    }
                }
            };
            match due {
                // First in line: wait for the slot, or for a rate change or a new first waiter.
                Some(due) => {
                    let _ = tokio::time::timeout_at(due, notify.notified()).await;
                }
                // A permit stored by `notify_one` while we were not yet listening is not lost.
                None => notify.notified().await,
            }
        }
    }

    /// The API throttled a call (`call`: the delivery's first or a retry): count it in the current
    /// window and lower the rate by the share of throttled calls (see the module documentation).
    pub fn throttled(&self, call: Call) {
        let mut s = self.state();
        let now = Instant::now();
        if call == Call::Repeat {
            // A retry's throttle says which kind of throttle this is, not how far over the quota
            // the rate is: the windows count first calls only.
            s.hot.record(now, false, true);
            return;
        }
        s.hot.record(now, true, false);
        let mut window = match s.window {
            Some(w) if now.duration_since(w.opened) < self.policy.cooldown => w,
            _ => Window {
                opened: now,
                base: s.rate,
                hot: s.hot.share(now),
                opened_in_slow_start: s.probing,
                deepest: if s.probing {
                    self.policy.decrease.min(SLOW_START_DEEPEST)
                } else {
                    self.policy.decrease
                },
                first_throttles: 0,
                answers: 0,
            },
        };
        window.first_throttles = window.first_throttles.saturating_add(1);
        window.answers = window.answers.saturating_add(1);
        s.window = Some(window);
        let expected = window.base * self.policy.cooldown.as_secs_f64();
        let cut = window.cut(expected);
        if cut < 1.0 {
            // With no cool-down every throttle is a window of its own: no floor to reach.
            let enough = window.first_throttles >= SLOW_START_EXIT_MIN_THROTTLES
                || self.policy.cooldown.is_zero();
            let shows_a_quota =
                enough && (cut <= SLOW_START_EXIT_CUT || window.first_calls_show_a_quota(expected));
            if s.probing && !shows_a_quota {
                return;
            }
            let mut target = window.base * cut;
            let accepted = s.accepted.per_second(now);
            if window.opened_in_slow_start && accepted > 0.0 {
                // The window that ends the slow start found a quota the doubling rate passed (by
                // more than twice when the API's bucket let a burst through first): what the API
                // accepts lately measures the quota itself, so land there instead of cutting by a
                // factor one window at a time (each window over the quota is a second of
                // throttles).
                target = target.min(accepted.max(window.base * SLOW_START_FLOOR));
            }
            s.probing = false;
            s.rate = s.rate.min(clamp(target, &self.policy));
            if !window.opened_in_slow_start {
                s.last_cut = Some(window.base);
            }
        }
    }

    /// A call got an answer that was not a throttle: speed up (fast until the first cut, a little
    /// after it).
    pub fn succeeded(&self) {
        let mut s = self.state();
        let now = Instant::now();
        s.accepted.record(now);
        s.hot.record(now, true, false);
        if let Some(w) = s.window.as_mut() {
            if now.duration_since(w.opened) < self.policy.cooldown {
                w.answers = w.answers.saturating_add(1);
            }
        }
        let step = if s.probing {
            1.0
        } else {
            // `increase` per second at the current rate means `increase / rate` per call.
            let careful = s.last_cut.is_some_and(|cut| careful_near(s.rate, cut));
            let increase = if careful {
                self.policy.increase * CAREFUL_INCREASE
            } else {
                self.policy.increase
            };
            increase / s.rate
        };
        s.rate = clamp(s.rate + step, &self.policy);
        // A higher rate brings the next slot forward.
        s.wake_first();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state with the idle decay up to now applied.
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        let mut s = self.lock();
        s.decay(Instant::now(), &self.policy);
        s
    }
}

/// Whether `rate` is near the rate the last cut was made at (`cut`): from 5% below it to 10% above.
/// A single throttle at 20 calls/s cuts 5%, so the band holds the rate a throttle lands at.
fn careful_near(rate: f64, cut: f64) -> bool {
    (0.95 * cut..=1.1 * cut).contains(&rate)
}

fn clamp(rate: f64, p: &RatePolicy) -> f64 {
    let upper = p.max.unwrap_or(f64::MAX);
    rate.max(p.min).min(upper)
}

fn interval(rate: f64) -> Duration {
    // The rate is clamped to a positive floor (0.01/s at the least); should it still be nonsense,
    // wait an hour rather than panic on an overflowing instant.
    const LONGEST: Duration = Duration::from_secs(3600);
    Duration::try_from_secs_f64(rate.recip()).map_or(LONGEST, |d| d.min(LONGEST))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn policy() -> RatePolicy {
        RatePolicy {
            initial: 10.0,
            min: 0.5,
            max: None,
            decrease: 0.5,
            increase: 1.0,
            cooldown: Duration::from_secs(1),
        }
    }

    /// Throttles in one burst, enough to be a share that cuts by the full factor.
    fn burst_of_throttles(limiter: &AdaptiveRateLimiter) {
        for _ in 0..1_000 {
            limiter.throttled(Call::First);
        }
    }

    /// Lets spawned tasks run until `condition` holds (paused time does not move meanwhile).
    async fn until(condition: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if condition() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("condition not reached");
    }

    /// Calls granted in `window` by 32 tasks hammering the limiter.
    async fn granted_in(limiter: Arc<AdaptiveRateLimiter>, window: Duration) -> usize {
        let counter = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (l, c) = (limiter.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    l.acquire().await;
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(window).await;
        for t in tasks {
            t.abort();
        }
        counter.load(Ordering::Relaxed)
    }

    /// Spawns a caller that records `name` in `order` when it is let through.
    fn spawn_caller(
        limiter: &Arc<AdaptiveRateLimiter>,
        order: &Arc<Mutex<Vec<(&'static str, Instant)>>>,
        name: &'static str,
        first_queued: Instant,
    ) -> tokio::task::JoinHandle<()> {
        let (l, o) = (limiter.clone(), order.clone());
        tokio::spawn(async move {
            l.acquire_for(first_queued).await;
            o.lock().unwrap().push((name, Instant::now()));
        })
    }

    #[test]
    fn window_cut_table() {
        // (throttles, answers, calls the base rate allows in the window, deepest, hot share)
        // -> multiplier. A window tolerates TOLERATED_SHARE (2%) plus the hot tokens' share (3%
        // in the first rows); past it, it cuts the whole share but the hot tokens'.
        let rows = [
            ((0, 0, 0.0, 0.7, 0.03), 1.0),       // nothing counted
            ((1, 50, 50.0, 0.7, 0.03), 1.0),     // 2%: tolerated
            ((2, 40, 40.0, 0.7, 0.03), 1.0),     // exactly the tolerated 5%
            ((10, 100, 100.0, 0.7, 0.03), 0.93), // 10%: 7% over the hot tokens' share
            ((25, 50, 50.0, 0.7, 0.03), 0.7),    // half throttled: the full factor
            ((50, 50, 50.0, 0.5, 0.03), 0.5),    // all throttled, slow start: halved
            // A lone hot token while little is sent: its share of the rate, not of the answers.
            ((3, 3, 100.0, 0.7, 0.03), 1.0),
            ((8, 8, 100.0, 0.7, 0.03), 0.95),
            // More answers than the rate allows (a cut just happened): the answers count.
            ((30, 200, 100.0, 0.7, 0.03), 0.88),
            // No cool-down: every throttle is a whole window of its own.
            ((1, 1, 0.0, 0.7, 0.03), 0.7),
            // No hot tokens: 2% tolerated; past it, every throttle takes one call per second off.
            ((1, 50, 50.0, 0.7, 0.0), 1.0),  // exactly 2%
            ((2, 40, 40.0, 0.7, 0.0), 0.95), // 5%
            ((1, 20, 20.0, 0.7, 0.0), 0.95), // one throttle at 20/s
            ((10, 100, 100.0, 0.7, 0.0), 0.9),
        ];
        for ((throttles, answers, expected, deepest, hot), want) in rows {
            let got = window_cut(f64::from(throttles), answers, expected, deepest, hot);
            assert!(
                (got - want).abs() < 1e-9,
                "{throttles}/{answers} of {expected} with {hot} hot: {got} != {want}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn accepted_rate_is_the_busiest_recent_slot_scaled_to_a_second() {
        let mut accepted = AcceptedRate::default();
        let start = Instant::now();
        assert_eq!(accepted.per_second(start), 0.0);
        // 10 answers in each of the first three 100 ms slots, 2 in the fourth.
        for slot in 0..3u32 {
            for _ in 0..10 {
                accepted.record(start + ACCEPTED_SLOT * slot);
            }
        }
        for _ in 0..2 {
            accepted.record(start + ACCEPTED_SLOT * 3);
        }
        // In the fifth slot: the last three whole slots are 10, 10, 2: 100/s.
        assert_eq!(accepted.per_second(start + ACCEPTED_SLOT * 4), 100.0);
        // Two slots later the tens have left the three it looks at: 2 and two empty ones.
        assert_eq!(accepted.per_second(start + ACCEPTED_SLOT * 6), 20.0);
        // A long quiet empties every slot.
        assert_eq!(accepted.per_second(start + Duration::from_secs(3_600)), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn hot_share_is_repeats_per_answer_over_the_horizon() {
        let mut hot = HotShare::default();
        let start = Instant::now();
        // Too few answers to say.
        for _ in 0..10 {
            hot.record(start, true, false);
        }
        hot.record(start, false, true);
        assert_eq!(hot.share(start), 0.0);
        // 100 answers and 5 repeats over the horizon: 5%.
        for i in 0..90u32 {
            hot.record(
                start + Duration::from_millis(50 * u64::from(i)),
                true,
                false,
            );
        }
        for _ in 0..4 {
            hot.record(start + Duration::from_secs(4), false, true);
        }
        assert!((hot.share(start + Duration::from_secs(5)) - 0.05).abs() < 1e-9);
        // Capped: a window of repeats alone is the quota's, past HOT_MAX_SHARE.
        for _ in 0..1_000 {
            hot.record(start + Duration::from_secs(5), false, true);
        }
        assert_eq!(hot.share(start + Duration::from_secs(5)), HOT_MAX_SHARE);
        // Ten seconds on, all of it has left the horizon.
        assert_eq!(hot.share(start + Duration::from_secs(16)), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_that_ends_the_slow_start_lands_at_what_the_api_accepted() {
        let limiter = AdaptiveRateLimiter::new(policy());
        // The slow start doubles on while the API accepts 7 calls every 100 ms, then, its bucket
        // spent, 2 (20 a second).
        for accepted in [7, 7, 7, 7, 7, 7, 7, 2, 2, 2] {
            for _ in 0..accepted {
                limiter.succeeded();
            }
            tokio::time::advance(ACCEPTED_SLOT).await;
        }
        assert_eq!(limiter.rate(), 65.0);
        // Then first calls are throttled, past the share that ends the slow start: the window's
        // cut by its share alone would be to 55 calls a second (15% off); it lands at the 20 the
        // API accepts.
        for _ in 0..11 {
            limiter.throttled(Call::First);
        }
        assert_eq!(limiter.rate(), 20.0);
        // A later window cuts by the factor as before (nothing accepted since to measure).
        tokio::time::advance(Duration::from_millis(1_001)).await;
        burst_of_throttles(&limiter);
        assert_eq!(limiter.rate(), 10.0);
    }

    /// One call every `gap`, each answered, `calls` times: light traffic.
    async fn light_traffic(limiter: &AdaptiveRateLimiter, calls: usize, gap: Duration) {
        for _ in 0..calls {
            limiter.acquire().await;
            limiter.succeeded();
            tokio::time::sleep(gap).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn light_traffic_keeps_the_rate_near_the_initial_one() {
        let limiter = AdaptiveRateLimiter::new(policy());
        // A week of one answered call every 5 s: without decay, 120,960 calls/s.
        light_traffic(&limiter, 120_960, Duration::from_secs(5)).await;
        let rate = limiter.rate();
        assert!(rate < 3.0 * policy().initial, "{rate}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_limiter_decays_back_to_the_initial_rate_and_starts_over() {
        let limiter = AdaptiveRateLimiter::new(policy());
        for _ in 0..990 {
            limiter.succeeded();
        }
        limiter.acquire().await; // the last call; the line is empty from here
        assert_eq!(limiter.rate(), 1_000.0);
        // Within the grace nothing moves; then the excess halves every half-life.
        tokio::time::advance(IDLE_GRACE).await;
        assert_eq!(limiter.rate(), 1_000.0);
        tokio::time::advance(IDLE_HALF_LIFE).await;
        assert!((limiter.rate() - 505.0).abs() < 0.01, "{}", limiter.rate());
        tokio::time::advance(IDLE_HALF_LIFE).await;
        assert!((limiter.rate() - 257.5).abs() < 0.01, "{}", limiter.rate());
        tokio::time::advance(Duration::from_secs(3_600)).await;
        assert_eq!(limiter.rate(), 10.0);
        // Starting over: slow start again, the first burst paced at the initial rate.
        let start = Instant::now();
        let order = Arc::new(Mutex::new(Vec::new()));
        let limiter = Arc::new(limiter);
        let tasks: Vec<_> = (0..5)
            .map(|_| spawn_caller(&limiter, &order, "burst", start))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let times: Vec<_> = order
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| *t - start)
            .collect();
        let want: Vec<_> = (0..5).map(|i| Duration::from_millis(100 * i)).collect();
        assert_eq!(times, want, "10/s, not 1,000/s");
        for _ in 0..10 {
            limiter.succeeded();
        }
        assert_eq!(limiter.rate(), 20.0, "slow start doubles again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_in_full_use_does_not_decay_and_a_learned_quota_is_kept() {
        let limiter = Arc::new(AdaptiveRateLimiter::new(policy()));
        for _ in 0..90 {
            limiter.succeeded();
        }
        // 100/s used in full for a minute: callers always wait, so nothing decays.
        let n = granted_in(limiter.clone(), Duration::from_secs(60)).await;
        assert!((5_990..=6_010).contains(&n), "{n}");
        assert_eq!(limiter.rate(), 100.0);
        // A rate the API cut below the initial one stays there however long the quiet.
        let cut = AdaptiveRateLimiter::new(policy());
        cut.acquire().await;
        burst_of_throttles(&cut);
        tokio::time::advance(Duration::from_secs(3_600)).await;
        assert_eq!(cut.rate(), 5.0);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_rate() {
        let limiter = Arc::new(AdaptiveRateLimiter::new(policy()));
        let n = granted_in(limiter, Duration::from_secs(10)).await;
        // 10 calls/s for 10 s, whatever the number of callers.
        assert!((99..=101).contains(&n), "{n}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_cuts_by_the_factor_once_per_cooldown() {
        let limiter = AdaptiveRateLimiter::new(policy());
        burst_of_throttles(&limiter);
        assert_eq!(limiter.rate(), 5.0);
        tokio::time::advance(Duration::from_millis(1_001)).await;
        burst_of_throttles(&limiter);
        assert_eq!(limiter.rate(), 2.5);
        for _ in 0..100 {
            burst_of_throttles(&limiter);
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        assert_eq!(limiter.rate(), 0.5, "never below the floor");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_doubles_until_the_first_real_push_back() {
        let limiter = AdaptiveRateLimiter::new(policy());
        // One second of answered calls at 10/s doubles the rate...
        for _ in 0..10 {
            limiter.succeeded();
        }
        assert_eq!(limiter.rate(), 20.0);
        // ...a lone throttle (a single hot token) does not end the slow start...
        limiter.throttled(Call::First);
        assert_eq!(limiter.rate(), 20.0);
        for _ in 0..20 {
            limiter.succeeded();
        }
        assert_eq!(limiter.rate(), 40.0);
        // ...until the API pushes back on a real share of the calls: halved.
        tokio::time::advance(Duration::from_secs(2)).await;
        burst_of_throttles(&limiter);
        assert_eq!(limiter.rate(), 20.0);
        for _ in 0..20 {
            limiter.succeeded();
        }
        assert!((limiter.rate() - 21.0).abs() < 0.05, "{}", limiter.rate());
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_receive_holding_a_few_hot_tokens_does_not_end_the_slow_start() {
        let limiter = AdaptiveRateLimiter::new(policy());
        // Three of the first five calls are hot tokens' first calls: a quarter of what the rate
        // allows, but three throttles, not the many a quota makes.
        for _ in 0..2 {
            limiter.succeeded();
        }
        for _ in 0..3 {
            limiter.throttled(Call::First);
        }
        assert_eq!(limiter.rate(), 12.0);
        for _ in 0..12 {
            limiter.succeeded();
        }
        assert_eq!(limiter.rate(), 24.0, "still doubling");
        // A fourth in the same window: that many is a quota's doing, and ends it.
        limiter.throttled(Call::First);
        assert!(limiter.rate() < 12.0, "{}", limiter.rate());
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_cut_successes_raise_the_rate_slowly_up_to_the_ceiling() {
        let limiter = AdaptiveRateLimiter::new(RatePolicy {
            max: Some(12.0),
            ..policy()
        });
        burst_of_throttles(&limiter); // 5/s, slow start over
                                      // One second of successes at 5/s adds about one call per second.
        for _ in 0..5 {
            limiter.succeeded();
        }
        assert!((limiter.rate() - 6.0).abs() < 0.1, "{}", limiter.rate());
        for _ in 0..1_000 {
            limiter.succeeded();
        }
        assert_eq!(limiter.rate(), 12.0);
    }

    /// A second of answered calls at the current rate (rounded: a step of about, not exactly,
    /// `increase_per_sec`).
    fn a_second_of_successes(limiter: &AdaptiveRateLimiter) {
        for _ in 0..limiter.rate().round() as usize {
            limiter.succeeded();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn near_the_last_cut_the_probe_is_careful() {
        let limiter = AdaptiveRateLimiter::new(production_policy());
        assert!(limiter.adopt(Start {
            rate: 20.0,
            slow_start: false,
        }));
        // One throttle in a second's 20 calls: 5%, past the 2% tolerated: the whole 5% off.
        limiter.throttled(Call::First);
        assert!((limiter.rate() - 19.0).abs() < 1e-9, "{}", limiter.rate());
        // Within 5% of where the quota was met, a second adds a fifth of increase_per_sec.
        let before = limiter.rate();
        a_second_of_successes(&limiter);
        let step = limiter.rate() - before;
        assert!((0.15..0.25).contains(&step), "{step}");
        // Far below it (a deep cut), the full increase_per_sec: back quickly.
        tokio::time::advance(Duration::from_secs(2)).await;
        for _ in 0..10 {
            limiter.throttled(Call::First);
        }
        assert!(limiter.rate() < 0.8 * 19.2, "{}", limiter.rate());
        let before = limiter.rate();
        a_second_of_successes(&limiter);
        let step = limiter.rate() - before;
        assert!((0.9..1.05).contains(&step), "{step}");
        // More than 10% past the last cut, the quota has moved: the full increase again.
        let last_cut = 19.2;
        while limiter.rate() <= 1.1 * last_cut {
            limiter.succeeded();
        }
        let before = limiter.rate();
        a_second_of_successes(&limiter);
        let step = limiter.rate() - before;
        assert!((0.9..1.05).contains(&step), "{step}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_applies_to_the_waiting_callers() {
        let limiter = Arc::new(AdaptiveRateLimiter::new(policy()));
        burst_of_throttles(&limiter); // 5/s
        burst_of_throttles(&limiter); // within cool-down: still 5/s
        let n = granted_in(limiter, Duration::from_secs(4)).await;
        assert!((19..=21).contains(&n), "{n}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_goes_before_fresher_deliveries() {
        let limiter = Arc::new(AdaptiveRateLimiter::new(policy()));
        let order = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        limiter.acquire().await; // the slot now runs: the next call is due in 100 ms
        tokio::time::advance(Duration::from_millis(10)).await;
        let mut tasks = Vec::new();
        for name in ["fresh-1", "fresh-2", "fresh-3"] {
            tasks.push(spawn_caller(&limiter, &order, name, Instant::now()));
            until(|| limiter.waiting() == tasks.len()).await;
        }
        // Two throttled retries arrive last, the older one last of all.
        let retry_young = start + Duration::from_millis(5);
        tasks.push(spawn_caller(&limiter, &order, "retry-young", retry_young));
        tasks.push(spawn_caller(&limiter, &order, "retry-old", start));
        until(|| limiter.waiting() == 5).await;
        for t in tasks {
            t.await.unwrap();
        }
        let names: Vec<_> = order.lock().unwrap().iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            ["retry-old", "retry-young", "fresh-1", "fresh-2", "fresh-3"]
        );
        // Still evenly spaced at 10/s.
        let times: Vec<_> = order
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| *t - start)
            .collect();
        let want: Vec<_> = (1..=5).map(|i| Duration::from_millis(100 * i)).collect();
        assert_eq!(times, want);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_change_applies_to_the_very_next_call() {
        let limiter = Arc::new(AdaptiveRateLimiter::new(policy()));
        let order = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        limiter.acquire().await;
        let waiter = spawn_caller(&limiter, &order, "up", start);
        until(|| limiter.waiting() == 1).await;
        tokio::time::advance(Duration::from_millis(10)).await;
        // Slow start: ten answers take the rate from 10/s to 20/s, so the waiter due at 100 ms
        // goes at 50 ms.
        for _ in 0..10 {
            limiter.succeeded();
        }
        waiter.await.unwrap();
        assert_eq!(
            order.lock().unwrap()[0].1 - start,
            Duration::from_millis(50)
        );
        // A cut to 10/s while the next caller waits pushes it to 100 ms after the last call.
        let waiter = spawn_caller(&limiter, &order, "down", start);
        until(|| limiter.waiting() == 1).await;
        burst_of_throttles(&limiter);
        assert_eq!(limiter.rate(), 10.0);
        waiter.await.unwrap();
        assert_eq!(
            order.lock().unwrap()[1].1 - start,
            Duration::from_millis(150)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_counts_the_callers_in_line() {
        let limiter = Arc::new(AdaptiveRateLimiter::new(policy()));
        let order = Arc::new(Mutex::new(Vec::new()));
        assert_eq!(limiter.waiting(), 0);
        limiter.acquire().await; // an idle limiter lets the first call through at once
        assert_eq!(limiter.waiting(), 0);
        let tasks: Vec<_> = (0..4)
            .map(|_| spawn_caller(&limiter, &order, "x", Instant::now()))
            .collect();
        until(|| limiter.waiting() == 4).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        until(|| order.lock().unwrap().len() == 1).await;
        assert_eq!(limiter.waiting(), 3);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(limiter.waiting(), 0);
        // 10/s for a 30 s budget: 300 deliveries; a floor wins over a lower figure.
        assert_eq!(limiter.capacity(Duration::from_secs(30), 10), 300);
        assert_eq!(limiter.capacity(Duration::from_millis(50), 10), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_waiter_does_not_stall_the_line() {
        let limiter = Arc::new(AdaptiveRateLimiter::new(policy()));
        let order = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        limiter.acquire().await;
        // The oldest waiter, first in line and watching the clock, gives up after 50 ms; a
        // waiter in the middle of the line is aborted too.
        let impatient = {
            let l = limiter.clone();
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_millis(50), l.acquire_for(start))
                    .await
                    .is_err()
            })
        };
        until(|| limiter.waiting() == 1).await;
        let patient = spawn_caller(
            &limiter,
            &order,
            "patient",
            start + Duration::from_millis(1),
        );
        let aborted = spawn_caller(
            &limiter,
            &order,
            "aborted",
            start + Duration::from_millis(2),
        );
        let last = spawn_caller(&limiter, &order, "last", start + Duration::from_millis(3));
        until(|| limiter.waiting() == 4).await;
        aborted.abort();
        until(|| limiter.waiting() == 3).await;
        assert!(impatient.await.unwrap(), "the impatient waiter timed out");
        assert_eq!(limiter.waiting(), 2);
        // Bounded, so that a stalled line fails the test instead of hanging it.
        let rest = async {
            patient.await.unwrap();
            last.await.unwrap();
        };
        tokio::time::timeout(Duration::from_secs(10), rest)
            .await
            .expect("the line stalled behind the dropped waiters");
        let got: Vec<_> = order
            .lock()
            .unwrap()
            .iter()
            .map(|(n, t)| (*n, *t - start))
            .collect();
        assert_eq!(
            got,
            [
                ("patient", Duration::from_millis(100)),
                ("last", Duration::from_millis(200))
            ]
        );
    }

    /// Drives the limiter at a fixed pattern of answers, one call per slot, for `secs` seconds:
    /// every `every`th answer of each `of` is a throttle. Returns the lowest rate seen.
    async fn drive_with_throttle_pattern(
        limiter: &AdaptiveRateLimiter,
        secs: u64,
        throttled: impl Fn(usize) -> bool,
    ) -> f64 {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut lowest = limiter.rate();
        let mut n = 0;
        while Instant::now() < end {
            limiter.acquire().await;
            if throttled(n) {
                limiter.throttled(Call::First);
            } else {
                limiter.succeeded();
            }
            n += 1;
            lowest = lowest.min(limiter.rate());
        }
        lowest
    }

    fn settled_policy() -> RatePolicy {
        // Held at its ceiling so that only cuts move it.
        RatePolicy {
            initial: 50.0,
            max: Some(50.0),
            decrease: 0.7,
            ..policy()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_two_percent_of_throttles_barely_moves_the_rate() {
        let limiter = AdaptiveRateLimiter::new(settled_policy());
        let lowest = drive_with_throttle_pattern(&limiter, 20, |n| n % 50 == 0).await;
        assert!(lowest >= 0.95 * 50.0, "{lowest}");
    }

    #[tokio::test(start_paused = true)]
    async fn half_the_calls_throttled_cuts_the_rate_hard() {
        let limiter = AdaptiveRateLimiter::new(settled_policy());
        let lowest = drive_with_throttle_pattern(&limiter, 2, |n| n % 2 == 0).await;
        assert!(lowest <= 0.75 * 50.0, "{lowest}");
    }

    /// 64 callers, 50 ms per call, against the emulator's quota (a token bucket of one second's
    /// calls, refilled continuously, as AWS's are): (accepted, throttled) calls in the last 30 s of
    /// a 60 s run, and the rate at its end. (A quota of calls in any sliding second was used until
    /// 2026-12-07: its goodput at a few calls a second swings with the phase of the additive probe
    /// against the window, 0.99 of the quota at 3/s and 0.91 at 5/s with the same limiter.)
    async fn run_against_quota(quota: usize) -> (usize, usize, f64) {
        let limiter = Arc::new(AdaptiveRateLimiter::new(RatePolicy {
            decrease: 0.7,
            ..policy()
        }));
        let api = Arc::new(Mutex::new(
            crate::emulator::quota::TokenBucket::new(quota as f64, Instant::now())
                .expect("a positive quota"),
        ));
        let counted_from = Instant::now() + Duration::from_secs(30);
        let tally = Arc::new(Mutex::new((0, 0)));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (l, api, tally) = (limiter.clone(), api.clone(), tally.clone());
                tokio::spawn(async move {
                    loop {
                        l.acquire().await;
                        let sent = Instant::now();
                        let admitted = api.lock().unwrap().try_acquire(sent);
                        // The answer takes a while to come back, as over the network.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if admitted {
                            l.succeeded();
                        } else {
                            l.throttled(Call::First);
                        }
                        if sent >= counted_from {
                            let mut t = tally.lock().unwrap();
                            if admitted {
                                t.0 += 1;
                            } else {
                                t.1 += 1;
                            }
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(60)).await;
        for t in tasks {
            t.abort();
        }
        let (accepted, throttled) = *tally.lock().unwrap();
        (accepted, throttled, limiter.rate())
    }

    #[tokio::test(start_paused = true)]
    async fn a_quota_is_found_and_kept() {
        // (quota, most throttled share allowed): the additive probe of 1 call/s per second is a
        // large step against a quota of 3/s, a small one against 100/s.
        for (quota, worst_share) in [(3, 0.25), (20, 0.03), (100, 0.02)] {
            let (accepted, throttled, rate) = run_against_quota(quota).await;
            let goodput = accepted as f64 / 30.0;
            let share = throttled as f64 / (accepted + throttled) as f64;
            let q = quota as f64;
            println!(
                "quota {quota}: goodput {goodput:.2}, {:.1}% throttled, rate {rate:.1}",
                100.0 * share
            );
            assert!(goodput >= 0.95 * q, "quota {quota}: goodput {goodput}");
            assert!(
                share <= worst_share,
                "quota {quota}: throttled share {share}"
            );
            assert!(
                (0.9 * q..=1.5 * q).contains(&rate),
                "quota {quota}: rate {rate}"
            );
        }
    }

    /// What a run of deliveries did: calls accepted and throttled (from `counted_from` on),
    /// deliveries resolved (all, and those of tokens not throttled on their own), the rate at the
    /// end and whether the limiter was still in slow start.
    #[derive(Debug, Default, Clone, Copy)]
    struct Tally {
        accepted: usize,
        throttled: usize,
        resolved: usize,
        resolved_cold: usize,
        retry_throttled: usize,
        rate: f64,
        slow_start: bool,
    }

    impl Tally {
        fn share(&self) -> f64 {
            self.throttled as f64 / (self.accepted + self.throttled).max(1) as f64
        }
    }

    /// What the simulated API does to calls: an optional account quota (any 1 s), and every
    /// `hot_every`th delivery's token throttled on its own for its first `hot_throttles` calls
    /// (the emulator's `throttle: n`).
    #[derive(Clone, Copy)]
    struct Api {
        quota: Option<usize>,
        hot_every: Option<usize>,
        hot_throttles: u32,
    }

    /// `callers` each resolving one delivery after another, as the worker does: a call takes
    /// 50 ms to answer, a throttled one is retried (as a retry, at its first place in line) after
    /// a full-jitter backoff from 100 ms doubling to 5 s, up to 30 attempts. Calls are counted
    /// from `counted_from` to `secs`.
    async fn run_deliveries(
        policy: RatePolicy,
        callers: u64,
        api: Api,
        secs: u64,
        counted_from: Duration,
    ) -> Tally {
        let limiter = Arc::new(AdaptiveRateLimiter::new(policy));
        // The emulator's quota (what the bench and tests/production.rs run against): a token
        // bucket of one second's calls, refilled continuously.
        let quota = Arc::new(Mutex::new(api.quota.and_then(|q| {
            crate::emulator::quota::TokenBucket::new(q as f64, Instant::now())
        })));
        let counted_from = Instant::now() + counted_from;
        let tally = Arc::new(Mutex::new(Tally::default()));
        let next = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..callers)
            .map(|caller| {
                let (l, quota, tally, next) =
                    (limiter.clone(), quota.clone(), tally.clone(), next.clone());
                tokio::spawn(async move {
                    // A small deterministic generator per caller for the jitter.
                    let mut seed = caller.wrapping_mul(6_364_136_223_846_793_005) | 1;
                    let mut jitter = move |ceiling: Duration| {
                        seed = seed
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        ceiling.mul_f64((seed >> 11) as f64 / (1u64 << 53) as f64)
                    };
                    loop {
                        let id = next.fetch_add(1, Ordering::Relaxed);
                        let hot = api.hot_every.is_some_and(|every| id % every == 0);
                        let queued = Instant::now();
                        for attempt in 0..30u32 {
                            l.acquire_for(queued).await;
                            let sent = Instant::now();
                            let admitted = quota
                                .lock()
                                .unwrap()
                                .as_mut()
                                .is_none_or(|bucket| bucket.try_acquire(sent))
                                && !(hot && attempt < api.hot_throttles);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            let counted = sent >= counted_from;
                            if admitted {
                                l.succeeded();
                                let mut t = tally.lock().unwrap();
                                if counted {
                                    t.accepted += 1;
                                    t.resolved += 1;
                                    t.resolved_cold += usize::from(!hot);
                                }
                                break;
                            }
                            // As the resolver does: a first call's throttle, and the first retry's
                            // after it.
                            match attempt {
                                0 => l.throttled(Call::First),
                                1 => l.throttled(Call::Repeat),
                                _ => {}
                            }
                            if counted {
                                let mut t = tally.lock().unwrap();
                                t.throttled += 1;
                                if attempt > 0 {
                                    t.retry_throttled += 1;
                                }
                            }
                            let ceiling = Duration::from_millis(100)
                                .saturating_mul(1 << attempt.min(10))
                                .min(Duration::from_secs(5));
                            tokio::time::sleep(jitter(ceiling)).await;
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        for t in tasks {
            t.abort();
        }
        let mut t = *tally.lock().unwrap();
        t.rate = limiter.rate();
        t.slow_start = limiter.state().probing;
        t
    }

    fn production_policy() -> RatePolicy {
        RatePolicy {
            decrease: 0.7,
            ..policy()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deliveries_with_retries_keep_the_throttled_share_low_under_a_quota() {
        // The bench's goodput scenario: a quota of 20 calls/s, measured over the first 30 s (slow
        // start included), and over the next 30 s (the steady state).
        for quota in [20, 100] {
            let api = Api {
                quota: Some(quota),
                hot_every: None,
                hot_throttles: 0,
            };
            let all = run_deliveries(production_policy(), 64, api, 30, Duration::ZERO).await;
            let steady =
                run_deliveries(production_policy(), 64, api, 60, Duration::from_secs(30)).await;
            let q = quota as f64;
            println!(
                "quota {quota}: first 30 s {:.1}% throttled, {:.2} Q; steady {:.1}%, {:.2} Q, rate {:.1}",
                100.0 * all.share(),
                all.resolved as f64 / 30.0 / q,
                100.0 * steady.share(),
                steady.resolved as f64 / 30.0 / q,
                steady.rate,
            );
            // 4.7% and 1.0% at 20 calls/s, 4.6% and 0.7% at 100 (7.0% and 4.0% at 20 before the
            // careful probe near the last cut and the cut of the whole share; 18% and 6% before
            // the slow start's exit landed at the accepted rate and the tolerance fell from 5% to
            // 2% plus the hot tokens' share). The first 30 s still hold the slow start's
            // overshoot: the calls sent while the first throttles were on their way back.
            assert!(all.share() < 0.06, "quota {quota}: {all:?}");
            assert!(steady.share() < 0.02, "quota {quota}: {steady:?}");
            assert!(
                steady.resolved as f64 / 30.0 >= 0.9 * q,
                "quota {quota}: {steady:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quota_with_hot_tokens_is_kept_not_collapsed() {
        // A quota, and one delivery in 20 a token throttled 8 times on its own: the hot tokens'
        // first calls are 5% of the first calls, over the 2% a window tolerates, and only their
        // measured share (their retries throttled again) keeps each window from cutting for
        // them. Without it the rate fell to 33 calls/s against a quota of 100, and 82 against 400.
        for quota in [100, 400] {
            let api = Api {
                quota: Some(quota),
                hot_every: Some(20),
                hot_throttles: 8,
            };
            let steady =
                run_deliveries(production_policy(), 512, api, 90, Duration::from_secs(30)).await;
            let q = quota as f64;
            println!(
                "quota {quota} with 5% hot: rate {:.1}, {:.2} Q resolved, {:.1}% throttled",
                steady.rate,
                steady.resolved as f64 / 60.0 / q,
                100.0 * steady.share()
            );
            assert!((0.9 * q..=1.5 * q).contains(&steady.rate), "{steady:?}");
            // The hot tokens' retries take their part of the quota: 8 throttled calls each.
            assert!(steady.resolved as f64 / 60.0 >= 0.6 * q, "{steady:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hot_tokens_retried_do_not_slow_the_others() {
        // No quota; one delivery in 20 is a token throttled 8 times on its own. The others must
        // go as fast as without them: the limiter stays in slow start.
        let clean = Api {
            quota: None,
            hot_every: None,
            hot_throttles: 0,
        };
        let hot = Api {
            hot_every: Some(20),
            hot_throttles: 8,
            ..clean
        };
        // Callers enough that hot deliveries holding theirs through their retries do not starve
        // the others: the limiter's rate is what is measured.
        let without = run_deliveries(production_policy(), 512, clean, 5, Duration::ZERO).await;
        let with = run_deliveries(production_policy(), 512, hot, 5, Duration::ZERO).await;
        println!("hot tokens: {without:?} clean; {with:?} with 5% hot");
        // Never cut: still in slow start, every answer added its call per second.
        assert!(with.slow_start, "{with:?}");
        assert_eq!(with.rate, 10.0 + with.resolved as f64, "{with:?}");
        // The others' pace is the clean run's, but for the slots the hot tokens' throttled calls
        // take from the slow start's doubling.
        assert!(
            with.resolved_cold as f64 >= 0.6 * without.resolved_cold as f64,
            "{with:?} against {without:?}"
        );
    }

    fn hint(rate: f64, quota: bool, age_secs: u64) -> Option<(Learned, Duration)> {
        Some((Learned { rate, quota }, Duration::from_secs(age_secs)))
    }

    #[test]
    fn the_start_follows_a_young_hint_and_ignores_an_old_one() {
        let p = RatePolicy {
            max: Some(500.0),
            ..policy()
        };
        let max_age = Duration::from_secs(900);
        let configured = Start {
            rate: 10.0,
            slow_start: true,
        };
        // (hint, max age) -> start
        let rows = [
            ((None, max_age), configured),
            // A found quota: at it, in congestion avoidance (also below the initial rate).
            (
                (hint(80.0, true, 60), max_age),
                Start {
                    rate: 80.0,
                    slow_start: false,
                },
            ),
            (
                (hint(3.0, true, 60), max_age),
                Start {
                    rate: 3.0,
                    slow_start: false,
                },
            ),
            // A slow-start peak: from there, still doubling; one below the start teaches nothing.
            (
                (hint(200.0, false, 899), max_age),
                Start {
                    rate: 200.0,
                    slow_start: true,
                },
            ),
            ((hint(4.0, false, 10), max_age), configured),
            // Clamped to the floor and the ceiling.
            (
                (hint(9_000.0, true, 1), max_age),
                Start {
                    rate: 500.0,
                    slow_start: false,
                },
            ),
            (
                (hint(0.01, true, 1), max_age),
                Start {
                    rate: 0.5,
                    slow_start: false,
                },
            ),
            // Too old, switched off, or not a rate: the configured start.
            ((hint(80.0, true, 901), max_age), configured),
            ((hint(80.0, true, 0), Duration::ZERO), configured),
            ((hint(f64::NAN, true, 1), max_age), configured),
            ((hint(f64::INFINITY, false, 1), max_age), configured),
            ((hint(-5.0, true, 1), max_age), configured),
        ];
        for ((h, max_age), want) in rows {
            assert_eq!(Start::from_hint(&p, h, max_age), want, "{h:?}, {max_age:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_limiter_started_at_a_learned_quota_paces_at_it_and_does_not_double() {
        let limiter = Arc::new(AdaptiveRateLimiter::new(policy()));
        let start = Start::from_hint(&policy(), hint(40.0, true, 30), Duration::from_secs(900));
        assert!(limiter.adopt(start));
        // 40 calls/s from the first second, not 10.
        let n = granted_in(limiter.clone(), Duration::from_secs(1)).await;
        assert!((39..=41).contains(&n), "{n}");
        // A second of answers at 40/s adds about one call per second, not forty.
        for _ in 0..40 {
            limiter.succeeded();
        }
        assert!((limiter.rate() - 41.0).abs() < 0.1, "{}", limiter.rate());
        assert_eq!(
            limiter.learned().0,
            Learned {
                rate: limiter.rate(),
                quota: true
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_limiter_started_at_a_learned_peak_goes_on_doubling() {
        let limiter = Arc::new(AdaptiveRateLimiter::new(policy()));
        let start = Start::from_hint(&policy(), hint(80.0, false, 30), Duration::from_secs(900));
        assert!(limiter.adopt(start));
        let n = granted_in(limiter.clone(), Duration::from_secs(1)).await;
        // 80/s from the start, and each answer adds a call per second (about 80 + 80 of them).
        assert!(n >= 79, "{n}");
        for _ in 0..80 {
            limiter.succeeded();
        }
        assert_eq!(limiter.rate(), 160.0);
        assert!(!limiter.learned().0.quota);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hint_does_not_override_what_calls_taught() {
        let limiter = AdaptiveRateLimiter::new(policy());
        limiter.acquire().await;
        let start = Start::from_hint(&policy(), hint(300.0, true, 1), Duration::from_secs(900));
        assert!(
            !limiter.adopt(start),
            "a call went out: too late for a hint"
        );
        assert_eq!(limiter.rate(), 10.0);
        let (_, granted) = limiter.learned();
        assert_eq!(granted, 1);
    }
}
