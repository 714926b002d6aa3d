//! Replicas share the work: which orders this worker writes, and what it does with the others.
//!
//! Every worker hears every `expired` event (and every worker's deadline watcher and sweep find
//! the same orders), so without a rule each order is locked and written once per replica: the
//! second waits on the first's row locks only to find the order cancelled. The rule: the live
//! workers of one orders table (their member slots, [`crate::mysql::members`], read every
//! [`REFRESH_EVERY`]) are ranked by slot; ids go in blocks of [`BLOCK`] consecutive ids, and
//! block `(id / BLOCK) % members` belongs to the member of that rank. Blocks rather than
//! `id % members`: a batch of one worker then holds neighbouring ids, which share B-tree pages.
//!
//! An order of another live member's block is *set aside*, not dropped: kept (16 bytes per
//! order, plus one entry per run of orders set aside together) under its owner until one of
//! three things gives it back to this worker's batches:
//!
//! * its owner's slot is freed: the owner died (the server rolled its transactions back and
//!   freed its lock when its connection closed) or stopped; reason `owner_left`;
//! * the members change and its block becomes this worker's; reason `rebalanced`;
//! * the last safety net: [`SET_ASIDE_FOR`] after it was queued, it is read again without a
//!   lock, and if it is still unpaid it is written here (its owner missed the event, hangs, or
//!   parked it); reason `not_written`.
//!
//! In every case the writer's locked transaction still decides: a view that differs between two
//! workers for a moment (one joining) makes both write some orders, never none. Orders given
//! back go straight to this worker's batches, not through the queue, whose dedup window would
//! drop them as already dispatched.
//!
//! With no member slot (named locks refused, more workers than slots) the worker owns every
//! order, as when it runs alone: slower with replicas, never wrong.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::db::Database;
use crate::db::members::{MemberLocks, Seen};
use crate::db::orders::UnpaidQuery;
use crate::queue::{DueOrder, OrderQueue, QueueClock};
use crate::stats::Stats;

/// Consecutive ids that go to the same member.
pub(crate) const BLOCK: u64 = 1024;
/// How often the member slots are read.
const REFRESH_EVERY: Duration = Duration::from_millis(250);
/// How long an order stays set aside before it is read again and, if still unpaid, written.
pub(crate) const SET_ASIDE_FOR: Duration = Duration::from_secs(30);
/// Orders set aside within this span (and of one origin) share one entry for their time.
const RUN_SPAN: Duration = Duration::from_millis(100);
/// How long the unlocked re-read of orders whose time ran out may take; past it they are all
/// written (the writer's lock decides). Well below the member connection's silence bound
/// ([`crate::mysql::members::MEMBER_SILENCE`]): the slots are not read while it runs.
const REREAD_TIMEOUT: Duration = Duration::from_secs(4);

/// How long after a member is first seen it starts owning orders: it may not have heard
/// events queued before it joined (it subscribes before it takes its slot, but this worker's
/// reader may lag behind the events). Workers see a join up to [`REFRESH_EVERY`] apart, so for
/// a moment they may disagree about orders queued around `join + JOIN_MARGIN`; both then write
/// some (harmless), and an order neither takes is given back after [`SET_ASIDE_FOR`].
const JOIN_MARGIN: Duration = Duration::from_secs(1);

/// A member: its slot and the connection id holding it.
type Member = (usize, u64);

/// The members as this worker last saw them.
#[derive(Debug, Clone, Default)]
struct View {
    /// This worker's slot; `None`: it owns every order.
    own: Option<Member>,
    /// Every live member, this one included, by slot, with when this worker first saw it
    /// (`None`: it was there before this worker looked, or it is this worker).
    live: Vec<(Member, Option<Instant>)>,
}

impl PartialEq for View {
    /// The same members: when they were first seen does not change who they are.
    fn eq(&self, other: &Self) -> bool {
        self.own == other.own
            && self.live.len() == other.live.len()
            && self.live.iter().zip(&other.live).all(|(a, b)| a.0 == b.0)
    }
}

impl View {
    /// The members `seen` now, dated from `previous` (the view before, `None` at the first
    /// look, when every member counts as there before this worker).
    fn from_seen(seen: Seen, previous: Option<&View>, now: Instant) -> Self {
        let live = seen
            .live
            .into_iter()
            .map(|member| {
                let since = match previous {
                    _ if Some(member) == seen.own => None,
                    None => None,
                    Some(view) => match view.live.iter().find(|(m, _)| *m == member) {
                        Some((_, since)) => *since,
                        None => Some(now),
                    },
                };
                (member, since)
            })
            .collect();
        Self {
            own: seen.own,
            live,
        }
    }

    fn has(&self, member: Member) -> bool {
        self.live.iter().any(|(m, _)| *m == member)
    }

    /// The live member that owns `order` (queued at `due_at`), `None` when it is this
    /// worker's. Only members seen [`JOIN_MARGIN`] before the order was queued take part.
    fn owner(&self, order: u64, due_at: Instant) -> Option<Member> {
        let own = self.own?;
        if self.live.len() < 2 {
            return None;
        }
        let takes_part = |since: &Option<Instant>| since.is_none_or(|s| s + JOIN_MARGIN <= due_at);
        let members = self.live.iter().filter(|(_, s)| takes_part(s)).count() as u64;
        if members == 0 {
            return None;
        }
        let rank = ((order / BLOCK) % members) as usize;
        let owner = self
            .live
            .iter()
            .filter(|(_, s)| takes_part(s))
            .nth(rank)
            .map(|(m, _)| *m)?;
        (owner != own).then_some(owner)
    }

    /// This worker's rank among the members.
    fn rank(&self) -> Option<usize> {
        let own = self.own?;
        self.live.iter().position(|(m, _)| *m == own)
    }

    /// The members counted: at least this worker.
    fn members(&self) -> usize {
        if self.own.is_some() {
            self.live.len().max(1)
        } else {
            1
        }
    }
}

/// Orders set aside together: when the first was queued, and how many.
#[derive(Debug, Clone, Copy)]
struct Run {
    at: Instant,
    count: u32,
}

/// The orders set aside for one owner, oldest first, and the runs that date them.
#[derive(Debug, Default)]
struct Pile {
    orders: VecDeque<DueOrder>,
    runs: VecDeque<Run>,
}

impl Pile {
    /// Sets `order`, queued `at`, aside.
    fn push(&mut self, order: DueOrder, at: Instant) {
        match self.runs.back_mut() {
            Some(run)
                if at.saturating_duration_since(run.at) < RUN_SPAN && run.count < u32::MAX =>
            {
                run.count += 1;
            }
            _ => self.runs.push_back(Run { at, count: 1 }),
        }
        self.orders.push_back(order);
    }

    /// Moves the orders queued at or before `cutoff` (all when `None`) to `out`, each with
    /// when its run was queued.
    fn take_until(&mut self, cutoff: Option<Instant>, out: &mut Vec<(DueOrder, Instant)>) {
        while let Some(run) = self.runs.front().copied() {
            if cutoff.is_some_and(|cutoff| run.at > cutoff) {
                break;
            }
            self.runs.pop_front();
            for _ in 0..run.count {
                let Some(order) = self.orders.pop_front() else {
                    break;
                };
                out.push((order, run.at));
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }
}

/// When `order` was queued, from its queue's `clock`.
fn queued_at(clock: &QueueClock, order: &DueOrder) -> Instant {
    let now = Instant::now();
    now.checked_sub(clock.waited(order, now)).unwrap_or(now)
}

/// What the dispatcher and the member check share.
#[derive(Debug, Default)]
struct State {
    view: View,
    /// Orders set aside, per owner.
    piles: BTreeMap<Member, Pile>,
    /// Orders given back to this worker, not yet in a batch.
    released: VecDeque<DueOrder>,
    /// How many orders the piles hold.
    held: usize,
}

/// Which orders this worker writes; see the module doc.
pub(crate) struct Share {
    state: Mutex<State>,
    released: Notify,
    stats: Arc<Stats>,
}

impl Share {
    /// A worker that owns every order: the `sweep` command, and any worker until it has seen
    /// the members.
    pub(crate) fn alone(stats: Arc<Stats>) -> Arc<Self> {
        stats.replicas.set(1);
        Arc::new(Self {
            state: Mutex::new(State::default()),
            released: Notify::new(),
            stats,
        })
    }

    /// Takes a member slot and reads the members once (so the first orders are already split),
    /// then keeps the view fresh in a task until `stop`. With named locks refused, it logs one
    /// warning and the worker works alone.
    pub(crate) async fn join(
        stats: Arc<Stats>,
        mut members: MemberLocks,
        db: Database,
        unpaid: UnpaidQuery,
        stop: CancellationToken,
    ) -> (Arc<Self>, Option<JoinHandle<()>>) {
        let share = Self::alone(stats);
        match members.refresh().await {
            Ok(seen) => {
                tracing::info!(
                    event = "replicas",
                    lock = members.first_name(),
                    locks = members.kind(),
                    slot = seen.own.map(|m| m.0),
                    "sharing the orders with the other workers of this orders table through the database's locks (one slot each)"
                );
                share.apply(View::from_seen(seen, None, Instant::now()));
            }
            Err(e) if e.refused => {
                warn_alone(&e.error);
                return (share, None);
            }
            Err(e) => {
                tracing::warn!(event = "replicas_check_failed", error = %e.error,
                    "cannot take a member slot yet; writing every order until it can");
            }
        }
        let task = tokio::spawn(Arc::clone(&share).run(members, db, unpaid, stop));
        (share, Some(task))
    }

    /// Every [`REFRESH_EVERY`]: the members (a change gives back what became this worker's),
    /// then the orders whose time ran out.
    async fn run(
        self: Arc<Self>,
        mut members: MemberLocks,
        db: Database,
        unpaid: UnpaidQuery,
        stop: CancellationToken,
    ) {
        let mut failing = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(REFRESH_EVERY) => {}
                () = stop.cancelled() => return,
            }
            match members.refresh().await {
                Ok(seen) => {
                    if failing {
                        tracing::info!(
                            event = "replicas_check_recovered",
                            "the member check works again"
                        );
                        failing = false;
                    }
                    let view = View::from_seen(seen, Some(&self.lock().view), Instant::now());
                    self.apply(view);
                }
                Err(e) if e.refused => {
                    warn_alone(&e.error);
                    self.apply(View::default());
                    return;
                }
                Err(e) => {
                    // The last view stays: its owners are still the likeliest writers, and
                    // what they leave comes back after SET_ASIDE_FOR at the latest.
                    if !failing {
                        tracing::warn!(event = "replicas_check_failed", error = %e.error,
                            "cannot read the other workers' member slots; keeping the last view and retrying");
                        failing = true;
                    }
                }
            }
            self.give_back_unwritten(&db, &unpaid).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this worker writes `order`; if not, it is set aside for its owner.
    /// `clock` is the clock of the queue it came from.
    pub(crate) fn keep(&self, order: DueOrder, clock: &QueueClock) -> bool {
        let mut state = self.lock();
        let at = queued_at(clock, &order);
        let Some(owner) = state.view.owner(order.id, at) else {
            return true;
        };
        state.piles.entry(owner).or_default().push(order, at);
        state.held += 1;
        self.stats.set_aside.set(state.held as i64);
        false
    }

    /// Keeps in `batch` only this worker's orders; sets the others aside.
    pub(crate) fn sort_out(&self, batch: &mut Vec<DueOrder>, clock: &QueueClock) {
        let mut state = self.lock();
        if state.view.own.is_none() || state.view.live.len() < 2 {
            return;
        }
        let before = state.held;
        batch.retain(|order| {
            let at = queued_at(clock, order);
            let Some(owner) = state.view.owner(order.id, at) else {
                return true;
            };
            {
                state.piles.entry(owner).or_default().push(*order, at);
                state.held += 1;
                false
            }
        });
        if state.held != before {
            self.stats.set_aside.set(state.held as i64);
        }
    }

    /// Fills `batch` up to `size` with orders given back to this worker, then with its own
    /// orders still queued (setting the others aside): without this a batch of N members
    /// would hold 1/N of what the queue handed over, and a burst would take N times the
    /// commits.
    pub(crate) fn fill_up(&self, batch: &mut Vec<DueOrder>, orders: &mut OrderQueue, size: usize) {
        {
            let mut state = self.lock();
            while batch.len() < size {
                match state.released.pop_front() {
                    Some(order) => batch.push(order),
                    None => break,
                }
            }
        }
        while batch.len() < size {
            match orders.try_recv() {
                Some(order) if self.keep(order, &orders.clock()) => batch.push(order),
                Some(_) => {}
                None => break,
            }
        }
        // An order given back may also have come again through the queue.
        batch.sort_unstable_by_key(|order| order.id);
        batch.dedup_by_key(|order| order.id);
    }

    /// The next order this worker writes: one given back, else the next of `orders` that is
    /// its own (setting the others aside). `None` once `orders` is finished and nothing is
    /// given back. Cancel-safe.
    pub(crate) async fn next(&self, orders: &mut OrderQueue) -> Option<DueOrder> {
        loop {
            if let Some(order) = self.lock().released.pop_front() {
                return Some(order);
            }
            tokio::select! {
                biased;
                order = orders.recv() => {
                    let order = order?;
                    if self.keep(order, &orders.clock()) {
                        return Some(order);
                    }
                }
                () = self.released.notified() => {}
            }
        }
    }

    /// The orders given back and not yet written: this worker's, so a stop leaves them.
    pub(crate) fn take_released(&self) -> Vec<u64> {
        self.lock().released.drain(..).map(|o| o.id).collect()
    }

    /// Takes a new view: logs and counts the change, and sorts every order set aside again
    /// (oldest first), giving back what is now this worker's.
    fn apply(&self, view: View) {
        let mut state = self.lock();
        if state.view == view {
            return;
        }
        let old = std::mem::replace(&mut state.view, view);
        let view = state.view.clone();
        self.stats.replicas.set(view.members() as i64);
        tracing::info!(
            event = "replicas_changed",
            members = view.members(),
            rank = view.rank(),
            slot = view.own.map(|m| m.0),
            was = old.members(),
            "the workers of this orders table changed; the orders are split again"
        );
        if state.held == 0 {
            return;
        }
        let mut held: Vec<(Member, DueOrder, Instant)> = Vec::with_capacity(state.held);
        for (owner, mut pile) in std::mem::take(&mut state.piles) {
            let mut orders = Vec::new();
            pile.take_until(None, &mut orders);
            held.extend(orders.into_iter().map(|(o, at)| (owner, o, at)));
        }
        held.sort_by_key(|(_, _, at)| *at);
        let (mut owner_left, mut rebalanced) = (0u64, 0u64);
        state.held = 0;
        for (was, order, at) in held {
            match view.owner(order.id, at) {
                Some(owner) => {
                    state.piles.entry(owner).or_default().push(order, at);
                    state.held += 1;
                }
                None => {
                    if view.has(was) {
                        rebalanced += 1;
                    } else {
                        owner_left += 1;
                    }
                    state.released.push_back(order);
                }
            }
        }
        state.piles.retain(|_, pile| !pile.is_empty());
        self.stats.set_aside.set(state.held as i64);
        drop(state);
        self.given_back(owner_left, &self.stats.taken_over_owner_left, "owner_left");
        self.given_back(rebalanced, &self.stats.taken_over_rebalanced, "rebalanced");
    }

    /// Counts and logs `count` orders given back for `reason`, and wakes the dispatcher.
    fn given_back(&self, count: u64, counter: &Counter, reason: &'static str) {
        if count == 0 {
            return;
        }
        Stats::add_n(counter, count);
        tracing::info!(
            event = "orders_taken_over",
            reason,
            count,
            "orders set aside for another worker are this worker's to write now"
        );
        self.released.notify_one();
    }

    /// Orders set aside [`SET_ASIDE_FOR`] ago or longer: read again without a lock, and those
    /// still unpaid given back (their owner did not write them). When the read fails they are
    /// all given back: the writer's locked transaction tells.
    async fn give_back_unwritten(&self, db: &Database, unpaid: &UnpaidQuery) {
        let Some(cutoff) = Instant::now().checked_sub(SET_ASIDE_FOR) else {
            return;
        };
        let mut due = Vec::new();
        {
            let mut state = self.lock();
            if state.held == 0 {
                return;
            }
            for pile in state.piles.values_mut() {
                pile.take_until(Some(cutoff), &mut due);
            }
            state.piles.retain(|_, pile| !pile.is_empty());
            state.held -= due.len().min(state.held);
            self.stats.set_aside.set(state.held as i64);
        }
        if due.is_empty() {
            return;
        }
        let mut due: Vec<DueOrder> = due.into_iter().map(|(order, _)| order).collect();
        let ids: Vec<u64> = due.iter().map(|o| o.id).collect();
        let reread = async {
            let mut conn = db.conn().await?;
            unpaid.still_unpaid(&mut conn, &ids).await
        };
        let still = match tokio::time::timeout(REREAD_TIMEOUT, reread).await {
            Ok(Ok(still)) => still,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "re-reading set-aside orders; writing them all");
                ids
            }
            Err(_) => ids,
        };
        let mut still = still;
        still.sort_unstable();
        due.retain(|order| still.binary_search(&order.id).is_ok());
        let count = due.len() as u64;
        self.lock().released.extend(due);
        self.given_back(count, &self.stats.taken_over_not_written, "not_written");
    }
}

#[cfg(test)]
impl Share {
    /// A worker at slot `own` among the members at slots `live`, as a refresh would see them
    /// (connection ids are the slot plus 100).
    pub(crate) fn among(stats: Arc<Stats>, own: usize, live: &[usize]) -> Arc<Self> {
        let share = Self::alone(stats);
        share.apply(View {
            own: Some((own, own as u64 + 100)),
            live: live.iter().map(|s| ((*s, *s as u64 + 100), None)).collect(),
        });
        share
    }

    /// Gives back every order set aside, as the safety net does with those their owner left
    /// unwritten (without the re-read, which needs a server).
    pub(crate) fn give_back_all(&self) {
        let mut due = Vec::new();
        {
            let mut state = self.lock();
            for pile in state.piles.values_mut() {
                pile.take_until(None, &mut due);
            }
            state.piles.clear();
            state.held = 0;
            self.stats.set_aside.set(0);
            state.released.extend(due.iter().map(|(order, _)| *order));
        }
        let count = due.len() as u64;
        self.given_back(count, &self.stats.taken_over_not_written, "not_written");
    }
}

/// The one warning of a worker that cannot share.
fn warn_alone(error: &dyn std::fmt::Display) {
    tracing::warn!(event = "replicas_unavailable", %error,
        "MySQL refuses named locks (GET_LOCK), so this worker cannot find the others: it writes every order itself; with replicas each order is locked by each of them (slower, never wrong)");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Origin, QueueSender, order_queue};

    /// A queue to make orders with: they carry when they were queued.
    struct Orders {
        tx: QueueSender,
        queue: OrderQueue,
    }

    impl Orders {
        fn new(stats: &Arc<Stats>) -> Self {
            let (tx, queue) = order_queue(1024, Arc::clone(stats));
            Self { tx, queue }
        }

        /// `ids` queued now, as the dispatcher receives them.
        async fn due(&mut self, ids: &[u64]) -> Vec<DueOrder> {
            for id in ids {
                self.tx.send(*id, Origin::Event).await.expect("room");
            }
            std::iter::from_fn(|| self.queue.try_recv()).collect()
        }

        fn clock(&self) -> QueueClock {
            self.queue.clock()
        }
    }

    fn view(own: usize, live: &[usize]) -> View {
        View {
            own: Some((own, own as u64 + 100)),
            live: live.iter().map(|s| ((*s, *s as u64 + 100), None)).collect(),
        }
    }

    fn owner(view: &View, id: u64) -> Option<Member> {
        view.owner(id, Instant::now())
    }

    fn ids(orders: &[DueOrder]) -> Vec<u64> {
        orders.iter().map(|o| o.id).collect()
    }

    #[test]
    fn blocks_of_ids_go_to_the_members_in_turn() {
        let first = view(3, &[3, 9]);
        let second = view(9, &[3, 9]);
        for id in [0, 1023, 2048, 5000] {
            assert_eq!(owner(&first, id), None, "{id}");
            assert_eq!(owner(&second, id), Some((3, 103)), "{id}");
        }
        for id in [1024, 2047, 3072] {
            assert_eq!(owner(&first, id), Some((9, 109)), "{id}");
            assert_eq!(owner(&second, id), None, "{id}");
        }
        assert_eq!(owner(&view(3, &[3]), 1024), None, "alone");
        assert_eq!(owner(&View::default(), 1024), None, "no slot");
    }

    #[tokio::test(start_paused = true)]
    async fn orders_of_a_member_that_leaves_are_given_back() {
        let stats = Arc::new(Stats::default());
        let mut orders = Orders::new(&stats);
        let share = Share::alone(Arc::clone(&stats));
        share.apply(view(3, &[3, 9]));
        let mut batch = orders.due(&[1, 1025, 2049, 3100]).await;
        share.sort_out(&mut batch, &orders.clock());
        assert_eq!(ids(&batch), [1, 2049]);
        assert_eq!(stats.set_aside.get(), 2);
        share.apply(view(3, &[3]));
        assert_eq!(stats.set_aside.get(), 0);
        assert_eq!(Stats::get(&stats.taken_over_owner_left), 2);
        let mut batch = orders.due(&[2]).await;
        share.fill_up(&mut batch, &mut orders.queue, 8);
        assert_eq!(ids(&batch), [2, 1025, 3100]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_member_in_a_freed_slot_does_not_inherit_the_old_ones_orders() {
        let stats = Arc::new(Stats::default());
        let mut orders = Orders::new(&stats);
        let share = Share::alone(Arc::clone(&stats));
        share.apply(view(3, &[3, 9]));
        let clock = orders.clock();
        let first = orders.due(&[1025]).await;
        assert!(!share.keep(first[0], &clock));
        // Slot 9 freed and taken by another connection between two looks: the newcomer owns
        // block 1 only for orders queued a margin after it was first seen.
        tokio::time::advance(Duration::from_millis(250)).await;
        let seen = Seen {
            own: Some((3, 103)),
            live: vec![(3, 103), (9, 555)],
        };
        let old = share.lock().view.clone();
        share.apply(View::from_seen(seen, Some(&old), Instant::now()));
        assert_eq!(Stats::get(&stats.taken_over_owner_left), 1);
        assert_eq!(share.take_released(), [1025]);
        let early = orders.due(&[1026]).await;
        assert!(share.keep(early[0], &clock), "too early for the newcomer");
        tokio::time::advance(JOIN_MARGIN).await;
        let later = orders.due(&[1027]).await;
        assert!(!share.keep(later[0], &clock), "the newcomer's now");
    }

    #[tokio::test(start_paused = true)]
    async fn a_third_member_takes_its_blocks_and_the_rest_is_rebalanced() {
        let stats = Arc::new(Stats::default());
        let mut orders = Orders::new(&stats);
        let share = Share::alone(Arc::clone(&stats));
        share.apply(view(3, &[3, 9]));
        let all: Vec<u64> = (0..6).map(|b| b * BLOCK).collect();
        let mut batch = orders.due(&all).await;
        share.sort_out(&mut batch, &orders.clock());
        assert_eq!(stats.set_aside.get(), 3, "blocks 1, 3, 5");
        // 3 members: blocks 0 and 3 are slot 3's; 1 and 4 slot 7's; 2 and 5 slot 9's.
        share.apply(view(3, &[3, 7, 9]));
        assert_eq!(Stats::get(&stats.taken_over_rebalanced), 1, "block 3");
        assert_eq!(
            stats.set_aside.get(),
            2,
            "block 1 for slot 7, block 5 for slot 9"
        );
        assert_eq!(share.take_released(), [3 * BLOCK]);
    }

    #[tokio::test(start_paused = true)]
    async fn orders_given_back_keep_their_origin_and_queue_time() {
        let stats = Arc::new(Stats::default());
        let mut orders = Orders::new(&stats);
        let share = Share::alone(Arc::clone(&stats));
        share.apply(view(3, &[3, 9]));
        orders
            .tx
            .send_overdue(1025, Origin::Sweep, Duration::from_secs(90))
            .await
            .expect("room");
        let mut batch: Vec<DueOrder> = std::iter::from_fn(|| orders.queue.try_recv()).collect();
        share.sort_out(&mut batch, &orders.clock());
        assert!(batch.is_empty());
        tokio::time::advance(Duration::from_secs(2)).await;
        share.apply(view(3, &[3]));
        let mut batch = Vec::new();
        share.fill_up(&mut batch, &mut orders.queue, 8);
        assert_eq!(batch[0].origin(), Origin::Sweep);
        assert_eq!(batch[0].overdue(), Duration::from_secs(90));
        let waited = orders.clock().waited(&batch[0], Instant::now());
        assert_eq!(
            waited,
            Duration::from_secs(2),
            "its wait counts from when it was queued"
        );
    }
}
