//! The ready loop: one thread owning every shard's `RawNode`. Each round it
//! takes the queued inputs, ticks, collects every shard's `Ready`, writes all
//! their entries and hard states in one WAL group commit, then sends messages
//! and hands committed entries to each shard's apply loop.
//!
//! It never blocks on one shard: committed entries an apply queue has no
//! room for wait in the shard's backlog. It never stops on one request: a
//! command too large for a log entry is refused before it is proposed, and a
//! failed WAL write (the WAL is then poisoned) leaves the loop answering —
//! writes refused, reads served where that is still linearizable.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aerie_engine::{Command, Engine};
use aerie_wal::{LogBatch, Wal};
use raft::prelude::{Message, MessageType, Ready};
use raft::{RawNode, SnapshotStatus, StateRole};

use crate::apply::{self, Appended, ApplyTask, Waiter};
use crate::codec::{Proposal, SnapshotRef};
use crate::error::{Error, Result};
use crate::group::{CLUSTER_GROUP, ClusterGroup};
use crate::health::{Gate, Refusal};
use crate::install::{self, Fetch};
use crate::lock;
use crate::node::{Input, NodeConfig, ShardStatus, now_ms};
use crate::placement::Placement;
use crate::shard::{Installing, PendingRead, Shard, open_raw};
use crate::storage::ShardStorage;
use crate::transport::{Envelope, Transport};

/// How often the shards this node leads are moved toward the placement.
/// A move takes three rounds (add a learner, replace a voter, leave the
/// joint configuration), each a few microseconds of work per shard.
const PLACEMENT_INTERVAL_MS: u64 = 50;
/// The placement hands a shard's leadership to one voter at most this often.
/// A transfer drops the shard's proposals until it completes or times out
/// (an election timeout), and a voter may never take it: a stopping node
/// ignores it, and asking it again every round would stop the shard's
/// writes for as long as that node lingers.
const TRANSFER_RETRY_MS: u64 = 30_000;
/// Inputs taken per loop round before the readies are processed.
const MAX_INPUTS_PER_ROUND: usize = 4096;
/// Attempts at fetching and installing one snapshot before raft is rebuilt
/// from disk and asks the leader again.
const INSTALL_ATTEMPTS: usize = 5;
/// How long a shard whose install failed waits before raft starts over.
const INSTALL_RETRY_MS: u64 = 2_000;
/// Snapshot chunks queued for one installer.
const CHUNK_QUEUE: usize = 16;
/// A member heard from within this long counts as live when the cluster
/// group leader judges whether a dead member can be replaced.
const LIVE_WITHIN_MS: u64 = 3_000;
/// Bytes a log entry carries besides the proposal's data (entry kind and
/// length prefixes), kept free under the WAL's entry limit.
const ENTRY_OVERHEAD_BYTES: usize = 64;

pub(crate) struct ReadyLoop {
    pub config: Arc<NodeConfig>,
    pub wal: Arc<Wal>,
    pub engine: Arc<Engine>,
    pub transport: Arc<dyn Transport>,
    pub shards: Vec<Shard>,
    pub inputs: Receiver<Input>,
    pub input: SyncSender<Input>,
    pub chunk_requests: SyncSender<Envelope>,
    pub status: Arc<Mutex<Vec<ShardStatus>>>,
    pub gate: Arc<Gate>,
    pub stopping: Arc<AtomicBool>,
    pub next_proposal: u64,
    pub next_read: u64,
    /// A WAL write failed: raft is no longer driven (its readies cannot be
    /// persisted); inputs are still answered.
    pub wal_failed: bool,
    /// The cluster's members and replication factor, once the node knows
    /// them: the shards this node leads are moved toward it.
    pub placement: Option<Placement>,
    pub last_placement: Instant,
    /// The node is stopping: it hands its shards off and takes none back.
    pub handing_off: bool,
    pub last_tick: Instant,
    pub last_compact: Instant,
    /// Membership entry index per shard as last published in full, and when.
    pub published_confs: Vec<u64>,
    pub last_published: Instant,
    /// The cluster group, on a node that runs one (`aerie node` does; the
    /// in-process test clusters place their shards by hand).
    pub cluster: Option<ClusterGroup>,
    pub cluster_status: Arc<Mutex<Option<ShardStatus>>>,
    /// When each member's last raft message arrived (or when it became
    /// one).
    pub heard: HashMap<u64, Instant>,
    /// Since when this node leads the cluster group (silence is only
    /// counted from then: a follower hears from the leader alone).
    pub group_leader_since: Option<Instant>,
    /// This node's damaged replicas (see [`crate::repair`]).
    pub damage: Arc<crate::repair::Damage>,
    /// Snapshot installs in flight and their totals.
    pub rebuilds: Arc<crate::rebuild::Rebuilds>,
}

impl ReadyLoop {
    pub fn run(mut self) {
        let tick = Duration::from_millis(self.config.tick_interval_ms.max(1));
        loop {
            let timeout = tick.saturating_sub(self.last_tick.elapsed());
            let first = match self.inputs.recv_timeout(timeout) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let more =
                std::iter::from_fn(|| self.inputs.try_recv().ok()).take(MAX_INPUTS_PER_ROUND);
            let inputs: Vec<Input> = first.into_iter().chain(more).collect();
            let mut stop = false;
            for input in inputs {
                stop |= !self.handle(input);
            }
            if stop {
                break;
            }
            if self.last_tick.elapsed() >= tick {
                self.last_tick = Instant::now();
                self.on_tick(tick);
            }
            if !self.wal_failed
                && let Err(e) = self.process_readies()
            {
                self.fail_wal(&e);
            }
            self.publish_status(tick);
        }
        self.close();
    }

    /// Publishes every shard's status for `Node::status`: the indices,
    /// leader and term every round, in place; the membership lists and the
    /// leader's progress (which allocate) when a membership changed, else
    /// once a tick; the cluster group's status then too.
    fn publish_status(&mut self, tick: Duration) {
        let conf_index = |s: &Shard| s.raw.store().meta().conf_index();
        let mut published = lock(&self.status);
        let stale = published.len() != self.shards.len()
            || self.last_published.elapsed() >= tick
            || self
                .shards
                .iter()
                .zip(&self.published_confs)
                .any(|(s, &c)| conf_index(s) != c);
        if stale {
            if let Some(group) = &self.cluster {
                *lock(&self.cluster_status) = Some(group.status());
            }
            *published = self.shards.iter().map(Shard::status).collect();
            self.published_confs = self.shards.iter().map(conf_index).collect();
            self.last_published = Instant::now();
            return;
        }
        for (shard, status) in self.shards.iter().zip(published.iter_mut()) {
            shard.refresh_status(status);
        }
    }

    fn on_tick(&mut self, tick: Duration) {
        let max_wait = Duration::from_millis(self.config.max_read_wait_ms);
        for shard in &mut self.shards {
            shard.expire_reads(max_wait, tick * 2);
            // An apply notification lost to a full input queue delays a read
            // by one tick at most.
            shard.complete_reads(&self.gate);
            shard.flush_backlog();
            // raft asked for a snapshot (a follower is past the log, or a
            // learner is missing from the newest one): an idle shard's apply
            // loop must be woken to take it.
            if shard.snapshots.wanted.load(Ordering::SeqCst) {
                let _ = shard.apply.try_send(ApplyTask::CheckSnapshot);
            }
            if !shard.is_frozen() && !self.wal_failed {
                shard.raw.tick();
            }
        }
        if let Some(group) = self.cluster.as_mut().filter(|_| !self.wal_failed) {
            group.raw.tick();
        }
        self.retry_failed_installs();
        if !self.wal_failed {
            self.repair_damaged();
            self.snapshot_far_learners();
            self.propose_checks();
            self.maybe_compact();
            if self.handing_off {
                self.hand_off();
            } else {
                self.drive_placement();
            }
        }
    }

    /// Hands every shard this node leads to its most caught-up other voter
    /// (raft sends it the missing entries first): a stopping node's clients
    /// then see no error. Asked again every tick while handing off.
    fn hand_off(&mut self) {
        let me = self.config.node_id;
        for shard in self
            .shards
            .iter_mut()
            .filter(|s| s.is_leader() && !s.is_frozen())
        {
            if let Some(to) = most_caught_up_voter(&shard.status(), me, |_| true) {
                shard.raw.transfer_leader(to);
            }
        }
        if let Some(group) = self.cluster.as_mut().filter(|g| g.is_leader())
            && let Some(to) = most_caught_up_voter(&group.status(), me, |_| true)
        {
            group.raw.transfer_leader(to);
        }
    }

    /// One membership change per shard this node leads, toward the
    /// placement, at most every `PLACEMENT_INTERVAL_MS`; a node that is not
    /// to hold replicas (it is leaving) hands its leaderships over instead.
    fn drive_placement(&mut self) {
        // A copy (every PLACEMENT_INTERVAL_MS): the loop's fields change below.
        let Some(placement) = self.placement.clone() else {
            return;
        };
        let placement = &placement;
        if self.last_placement.elapsed() < Duration::from_millis(PLACEMENT_INTERVAL_MS) {
            return;
        }
        self.last_placement = Instant::now();
        let me = self.config.node_id;
        let staying = placement.holds(me);
        let group_leader = self.cluster.as_ref().is_some_and(ClusterGroup::is_leader);
        if !group_leader {
            self.group_leader_since = None;
        } else if staying {
            self.retire_the_dead(placement);
        }
        // A leader that is not to stay in a group hands it over before any
        // change: not placeable (leaving), or not among the voters the
        // configuration goes to (a joint change that replaces it). raft-rs
        // keeps a leader that removed itself leading, dropping every
        // proposal, and its heartbeats keep the others from electing.
        let stays = |status: &ShardStatus| staying && status.voters.contains(&me);
        if let Some(group) = self.cluster.as_mut().filter(|g| g.is_leader()) {
            let status = group.status();
            if !stays(&status) {
                hand_to_placeable(&mut group.raw, &status, placement);
            } else {
                change_membership(&mut group.raw, me, &status, |s| {
                    crate::placement::next_group_step(s, placement)
                });
            }
        }
        // One rebalancing move at a time among the shards led here.
        let mut may_start_move = !self.shards.iter().filter(|s| s.is_leader()).any(|s| {
            let conf = s.raw.raft.prs().conf().to_conf_state();
            !conf.learners.is_empty() || !conf.voters_outgoing.is_empty()
        });
        for shard in self
            .shards
            .iter_mut()
            .filter(|s| s.is_leader() && !s.is_frozen())
        {
            let status = shard.status();
            if !stays(&status) {
                hand_to_placeable(&mut shard.raw, &status, placement);
                continue;
            }
            if change_membership(&mut shard.raw, me, &status, |s| {
                let step = crate::placement::next_step(s, placement, may_start_move);
                may_start_move &= !matches!(step, Some(crate::placement::Step::AddLearner(_)));
                step
            }) {
                continue;
            }
            let last = shard.raw.raft.raft_log.last_index();
            let Some(to) = crate::placement::leader_transfer(&status, placement, last) else {
                continue;
            };
            let retry = Duration::from_millis(TRANSFER_RETRY_MS);
            let asked_lately = matches!(shard.last_transfer,
                Some((target, at)) if target == to && at.elapsed() < retry);
            if !asked_lately && shard.raw.raft.lead_transferee.is_none() {
                tracing::info!(
                    shard = shard.id,
                    to,
                    "placement: handing leadership to the preferred voter"
                );
                shard.last_transfer = Some((to, Instant::now()));
                shard.raw.transfer_leader(to);
            }
        }
    }

    /// A new member counts as just heard from (it cannot have answered a
    /// leader before it was one); the silence of those gone is forgotten.
    fn set_placement(&mut self, placement: Placement) {
        let now = Instant::now();
        for &id in &placement.members {
            self.heard.entry(id).or_insert(now);
        }
        self.heard.retain(|id, _| placement.members.contains(id));
        self.placement = Some(placement);
    }

    /// On the cluster group's leader: proposes to retire a member silent
    /// for `replace_after_ms`, when the others can hold the shards.
    fn retire_the_dead(&mut self, placement: &Placement) {
        let since = *self.group_leader_since.get_or_insert_with(Instant::now);
        let heard = &self.heard;
        let silent_ms = |id: u64| {
            let last = heard.get(&id).map_or(since, |&at| at.max(since));
            last.elapsed().as_millis() as u64
        };
        let me = self.config.node_id;
        // A member silent past replace_after_ms is never counted live.
        let live_ms = LIVE_WITHIN_MS.min(placement.replace_after_ms);
        let Some(dead) = crate::placement::dead_to_retire(placement, me, silent_ms, live_ms) else {
            return;
        };
        tracing::warn!(
            node = dead,
            silent_ms = silent_ms(dead),
            "a member is unreachable past replace_after_ms: retiring it, its replicas move to the others"
        );
        if let Some(group) = &mut self.cluster {
            group.propose(&crate::cluster::ClusterCommand::Retire(dead));
        }
    }

    /// The WAL refused a write: it is poisoned until the node restarts. The
    /// proposals in flight were appended or not, nobody knows: in doubt.
    fn fail_wal(&mut self, error: &Error) {
        tracing::error!(node = self.config.node_id, error = %error, "the WAL failed: writes are refused until the node restarts; reads go on where they are safe");
        self.wal_failed = true;
        self.gate.set_wal_failed(error.to_string());
        for shard in &mut self.shards {
            lock(&shard.pending).fail_all(|| Error::InDoubt(shard.id));
        }
    }

    /// Answers everything still waiting: proposals were appended, so they are
    /// in doubt; reads and queued inputs did nothing, so they are refused.
    fn close(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        for shard in &mut self.shards {
            lock(&shard.pending).fail_all(|| Error::InDoubt(shard.id));
            for (_, read) in shard.reads.drain() {
                read.reply.send(Err(Error::Stopped));
            }
            for (_, read) in shard.waiting_reads.drain(..) {
                read.reply.send(Err(Error::Stopped));
            }
        }
        // Dropping the shards closes the apply queues; their threads end.
        self.shards.clear();
        while let Ok(input) = self.inputs.try_recv() {
            refuse_queued(input);
        }
    }

    fn shard(&mut self, id: u32) -> Option<&mut Shard> {
        self.shards.get_mut(id as usize)
    }

    /// Handles one input; false means stop.
    fn handle(&mut self, input: Input) -> bool {
        match input {
            Input::Stop => return false,
            Input::Net(envelope) => self.handle_net(envelope),
            Input::Propose {
                shard,
                command,
                reply,
            } => self.propose(shard, command, reply),
            Input::Read { shard, reply } => self.read(shard, reply),
            Input::Applied(shard) => {
                let gate = self.gate.clone();
                if let Some(shard) = self.shard(shard) {
                    shard.complete_reads(&gate);
                    shard.flush_backlog();
                }
            }
            Input::Installed { shard, result } => self.installed(shard, result),
            Input::SnapshotNow => {
                for shard in &self.shards {
                    request_snapshot(shard);
                }
            }
            Input::Campaign(CLUSTER_GROUP) => {
                if let Some(group) = &mut self.cluster {
                    let _ = group.raw.campaign();
                }
            }
            Input::Campaign(shard) => {
                if let Some(shard) = self.shard(shard) {
                    let _ = shard.raw.campaign();
                }
            }
            Input::ClusterPropose(command) => {
                if let Some(group) = self.cluster.as_mut().filter(|_| !self.wal_failed) {
                    group.propose(&command);
                }
            }
            Input::HandOff => {
                self.handing_off = true;
                self.hand_off();
            }
            Input::Membership {
                shard,
                change,
                reply,
            } => self.propose_membership(shard, change, reply),
            Input::Placement(placement) => self.set_placement(placement),
            Input::CheckNow => self.check_now(),
            Input::Control { shard, control } => {
                if !self.wal_failed
                    && let Some(shard) = self.shard(shard)
                {
                    crate::check::propose_control(shard, &control);
                }
            }
        }
        true
    }

    fn handle_net(&mut self, envelope: Envelope) {
        match envelope {
            Envelope::Raft { shard, message } => {
                if let Some(heard) = self.heard.get_mut(&message.from) {
                    *heard = Instant::now();
                }
                // A node handing its shards off takes none back.
                if self.handing_off && message.get_msg_type() == MessageType::MsgTimeoutNow {
                    return;
                }
                if shard == CLUSTER_GROUP {
                    if let Some(group) = &mut self.cluster {
                        step(&mut group.raw, CLUSTER_GROUP, message);
                    }
                    return;
                }
                // While a snapshot installs, raft holds a ready open: stepping
                // it then is not allowed (the leader resends later).
                if let Some(shard) = self.shard(shard).filter(|s| !s.is_frozen()) {
                    step(&mut shard.raw, shard.id, message);
                }
            }
            request @ Envelope::ChunkRequest { .. } => {
                let _ = self.chunk_requests.try_send(request);
            }
            chunk @ Envelope::Chunk { shard, .. } => {
                if let Some(installing) = self.shard(shard).and_then(|s| s.installing.as_ref()) {
                    // A full queue drops the chunk; the fetch asks again.
                    let _ = installing.chunks.try_send(chunk);
                }
            }
        }
    }

    /// Why a proposal must be refused before it is appended, if it must.
    fn refusal(&self, shard: &Shard, command: &Command) -> Option<Error> {
        // Only the leader proposes: a follower's caller is told who leads
        // (the node layer proxies the request there), so every waiter knows
        // its entry's index and term and none waits on a forward raft may
        // have dropped unseen (a leader transfer drops proposals).
        if !shard.is_leader() || shard.is_frozen() {
            return Some(Error::NotLeader {
                shard: shard.id,
                leader: shard.raw.raft.leader_id,
            });
        }
        if let Some(refusal) = self.gate.refusal(&self.engine, shard.id, command) {
            return Some(Error::WritesRefused {
                shard: shard.id,
                refusal,
            });
        }
        let limit = self.config.max_inflight_proposals;
        if lock(&shard.pending).by_id.len() >= limit {
            return Some(Error::Overloaded {
                shard: shard.id,
                limit,
            });
        }
        None
    }

    fn propose(&mut self, shard_id: u32, command: Command, reply: apply::Reply) {
        self.next_proposal = self.next_proposal.wrapping_add(1);
        let id = self.next_proposal;
        let Some(shard) = self.shards.get(shard_id as usize) else {
            reply.send(Err(Error::NoShard(shard_id)));
            return;
        };
        if let Some(error) = self.refusal(shard, &command) {
            reply.send(Err(error));
            return;
        }
        let data = Proposal {
            id,
            now_ms: now_ms(),
            command,
        }
        .encode();
        let limit = self
            .wal
            .max_entry_bytes()
            .saturating_sub(ENTRY_OVERHEAD_BYTES);
        if data.len() > limit {
            reply.send(Err(Error::TooLarge {
                shard: shard_id,
                bytes: data.len(),
                limit,
            }));
            return;
        }
        let shard = &mut self.shards[shard_id as usize];
        if let Err(e) = shard.raw.propose(Vec::new(), data) {
            // raft refused it (e.g. a leader transfer is in progress):
            // nothing was appended, so the answer is definite.
            tracing::debug!(shard = shard_id, error = %e, "raft dropped a proposal");
            reply.send(Err(Error::Dropped(shard_id)));
            return;
        }
        let at = Appended {
            index: shard.raw.raft.raft_log.last_index(),
            term: shard.raw.raft.term,
        };
        lock(&shard.pending).by_id.insert(id, Waiter { at, reply });
    }

    fn propose_membership(
        &mut self,
        shard_id: u32,
        change: raft::prelude::ConfChangeV2,
        reply: apply::Callback<()>,
    ) {
        let Some(shard) = self.shard(shard_id) else {
            reply.send(Err(Error::NoShard(shard_id)));
            return;
        };
        if !shard.is_leader() || shard.is_frozen() {
            let leader = shard.raw.raft.leader_id;
            reply.send(Err(Error::NotLeader {
                shard: shard_id,
                leader,
            }));
            return;
        }
        reply.send(
            shard
                .raw
                .propose_conf_change(Vec::new(), change)
                .map_err(Error::Raft),
        );
    }

    fn read(&mut self, shard_id: u32, reply: apply::Callback<()>) {
        self.next_read += 1;
        let ctx = self.next_read.to_le_bytes().to_vec();
        let wal_failed = self.wal_failed;
        let gate = self.gate.clone();
        let Some(shard) = self.shard(shard_id) else {
            reply.send(Err(Error::NoShard(shard_id)));
            return;
        };
        // A follower asks the leader for the read index (raft forwards
        // it) and serves the read once it applied that far itself.
        if shard.raw.raft.leader_id == 0 {
            reply.send(Err(Error::NotLeader {
                shard: shard_id,
                leader: 0,
            }));
            return;
        }
        let read = PendingRead {
            since: Instant::now(),
            reply,
        };
        if wal_failed {
            // raft is no longer driven; a lone voter cannot have been
            // deposed, so its applied state is still the newest.
            if shard.raw.raft.prs().conf().voters().ids().len() == 1 {
                let commit = shard.raw.raft.raft_log.committed;
                shard.waiting_reads.push((commit, read));
                shard.complete_reads(&gate);
            } else {
                read.reply.send(Err(Error::WritesRefused {
                    shard: shard_id,
                    refusal: Refusal::WalFailed("reads need raft".into()),
                }));
            }
            return;
        }
        shard.raw.read_index(ctx.clone());
        shard.reads.insert(ctx, read);
    }

    /// One round: every shard's ready, one WAL write for all of them, then
    /// messages and committed entries.
    fn process_readies(&mut self) -> Result<()> {
        let mut batch = LogBatch::new();
        let mut readies = Vec::new();
        for i in 0..self.shards.len() {
            let shard = &mut self.shards[i];
            if shard.is_frozen() || shard.backlog_full() || !shard.raw.has_ready() {
                continue;
            }
            let mut ready = shard.raw.ready();
            let messages = ready.take_messages();
            send_messages(
                self.transport.as_ref(),
                self.config.node_id,
                &mut shard.raw,
                shard.id,
                messages,
            );
            if !ready.snapshot().is_empty() {
                self.start_install(i, ready);
                continue;
            }
            self.stage(i, &mut ready, &mut batch)?;
            readies.push((i, ready));
        }
        let group_ready = self.stage_group(&mut batch)?;
        if !batch.is_empty() {
            self.stage_commit_indices(&mut batch);
            self.wal.write(batch)?;
        }
        for (i, ready) in readies {
            self.finish_ready(i, ready);
        }
        if let Some(ready) = group_ready {
            self.finish_group_ready(ready)?;
        }
        Ok(())
    }

    /// The cluster group's ready up to the WAL write: its messages sent, a
    /// snapshot from its leader installed (the state travels in the
    /// message), committed entries applied, entries staged.
    fn stage_group(&mut self, batch: &mut LogBatch) -> Result<Option<Ready>> {
        let (transport, me) = (self.transport.as_ref(), self.config.node_id);
        let Some(group) = self.cluster.as_mut().filter(|g| g.raw.has_ready()) else {
            return Ok(None);
        };
        let mut ready = group.raw.ready();
        send_messages(
            transport,
            me,
            &mut group.raw,
            CLUSTER_GROUP,
            ready.take_messages(),
        );
        if !ready.snapshot().is_empty() {
            group.install(ready.snapshot())?;
        }
        group.hand_committed(ready.take_committed_entries())?;
        group
            .raw
            .store()
            .stage(ready.entries(), ready.hs(), batch)?;
        Ok(Some(ready))
    }

    /// The cluster group's ready after its entries are durable.
    fn finish_group_ready(&mut self, ready: Ready) -> Result<()> {
        let (transport, me) = (self.transport.as_ref(), self.config.node_id);
        let Some(group) = self.cluster.as_mut() else {
            return Ok(());
        };
        let (commit_moved, committed) =
            advance_durable(transport, me, &mut group.raw, CLUSTER_GROUP, ready);
        group.commit_unsaved |= commit_moved;
        group.hand_committed(committed)
    }

    /// Commit indices that moved since their last hard state ride along with
    /// a write that happens anyway: they need no fsync of their own (after a
    /// restart raft learns the commit index again; the apply loop skips what
    /// the engine already has).
    fn stage_commit_indices(&mut self, batch: &mut LogBatch) {
        for shard in self
            .shards
            .iter_mut()
            .filter(|s| s.commit_unsaved && !s.is_frozen())
        {
            shard.commit_unsaved = false;
            let hs = shard.raw.raft.hard_state();
            shard.raw.store().stage_hard_state(&hs, batch);
        }
        if let Some(group) = self.cluster.as_mut().filter(|g| g.commit_unsaved) {
            group.commit_unsaved = false;
            let hs = group.raw.raft.hard_state();
            group.raw.store().stage_hard_state(&hs, batch);
        }
    }

    /// The part of a ready that comes before the WAL write.
    fn stage(&mut self, i: usize, ready: &mut Ready, batch: &mut LogBatch) -> Result<()> {
        let gate = self.gate.clone();
        let shard = &mut self.shards[i];
        shard.note_role();
        for state in ready.take_read_states() {
            if let Some(read) = shard.reads.remove(&state.request_ctx) {
                shard.waiting_reads.push((state.index, read));
            }
        }
        shard.complete_reads(&gate);
        shard.hand_committed(ready.take_committed_entries());
        shard.raw.store().stage(ready.entries(), ready.hs(), batch)
    }

    /// The part of a ready after its entries are durable.
    fn finish_ready(&mut self, i: usize, ready: Ready) {
        let (transport, me) = (self.transport.as_ref(), self.config.node_id);
        let shard = &mut self.shards[i];
        let (commit_moved, committed) =
            advance_durable(transport, me, &mut shard.raw, shard.id, ready);
        shard.commit_unsaved |= commit_moved;
        shard.hand_committed(committed);
        shard.note_role();
    }

    fn start_install(&mut self, i: usize, ready: Ready) {
        let shard = &mut self.shards[i];
        let reference = match SnapshotRef::decode(&ready.snapshot().data) {
            Ok(reference) => reference,
            Err(e) => {
                tracing::error!(shard = shard.id, error = %e, "snapshot message without a file reference; raft starts over");
                shard.retry_install_at = Some(Instant::now());
                return;
            }
        };
        let (chunks_tx, chunks) = mpsc::sync_channel(CHUNK_QUEUE);
        let (barrier_tx, barrier) = mpsc::sync_channel(1);
        let _ = shard.apply.send(ApplyTask::Barrier(barrier_tx));
        let fetch = Fetch {
            me: self.config.node_id,
            shard: shard.id,
            reference: reference.clone(),
            dir: self.config.snapshot_dir.clone(),
            transport: self.transport.clone(),
            chunks,
            rebuilds: self.rebuilds.clone(),
            rate_bytes_per_sec: self.config.rebuild_rate_bytes_per_sec,
        };
        let engine = self.engine.clone();
        let input = self.input.clone();
        let shard_id = shard.id;
        tracing::info!(shard = shard_id, from = reference.node_id, file = %reference.file_name, "installing a snapshot");
        let spawned = std::thread::Builder::new()
            .name(format!("install-{shard_id}"))
            .spawn(move || {
                let _ = barrier.recv();
                let result = fetch_and_install(&fetch, &engine);
                let _ = input.send(Input::Installed {
                    shard: shard_id,
                    result,
                });
            });
        if spawned.is_err() {
            tracing::error!(
                shard = shard_id,
                "could not start the snapshot installer; raft starts over"
            );
            shard.retry_install_at = Some(Instant::now());
            return;
        }
        shard.installing = Some(Installing {
            ready,
            chunks: chunks_tx,
            reference,
        });
    }

    fn installed(&mut self, shard_id: u32, result: Result<PathBuf>) {
        let Some(installing) = self.shard(shard_id).and_then(|s| s.installing.take()) else {
            return;
        };
        let outcome = result.and_then(|path| {
            self.after_install(shard_id as usize, installing, &path)
                .map(|()| path)
        });
        if let Err(e) = outcome {
            tracing::error!(shard = shard_id, error = %e, "snapshot install failed; the engine keeps its previous state and raft starts over from disk");
            if let Some(shard) = self.shard(shard_id) {
                shard.retry_install_at =
                    Some(Instant::now() + Duration::from_millis(INSTALL_RETRY_MS));
            }
        }
    }

    /// A shard whose install failed gets a `RawNode` rebuilt from what is
    /// durable (which holds no trace of the snapshot it was told about): the
    /// leader finds it behind again and sends a snapshot again, possibly a
    /// newer one.
    fn retry_failed_installs(&mut self) {
        for i in 0..self.shards.len() {
            let shard = &self.shards[i];
            if shard.retry_install_at.is_none_or(|at| Instant::now() < at) {
                continue;
            }
            let reopened = open_raw(
                &self.config,
                &self.wal,
                &self.engine,
                shard.id,
                &shard.snapshots,
            );
            let shard = &mut self.shards[i];
            match reopened {
                Ok(raw) => {
                    shard.raw = raw;
                    shard.retry_install_at = None;
                    shard
                        .applied
                        .store(self.engine.applied_index(shard.log_id), Ordering::SeqCst);
                }
                Err(e) => {
                    tracing::error!(shard = shard.id, error = %e, "reopening raft after a failed install failed; trying again later");
                    shard.retry_install_at =
                        Some(Instant::now() + Duration::from_millis(INSTALL_RETRY_MS));
                }
            }
        }
    }

    /// The snapshot is in the engine: record it in the raft log, then finish
    /// the ready that carried it.
    fn after_install(
        &mut self,
        i: usize,
        installing: Installing,
        path: &std::path::Path,
    ) -> Result<()> {
        let mut ready = installing.ready;
        let shard = &mut self.shards[i];
        shard.raw.mut_store().apply_snapshot(ready.snapshot())?;
        let metadata = ready.snapshot().get_metadata();
        let (index, term) = (metadata.index, metadata.term);
        shard.applied.store(index, Ordering::SeqCst);
        let reference = SnapshotRef {
            node_id: self.config.node_id,
            file_name: apply::file_name(path),
            file_bytes: installing.reference.file_bytes,
        };
        *lock(&shard.snapshots.newest) = Some((index, term, reference));
        let shard_id = shard.id;
        self.note_rebuilt(shard_id, index, installing.reference.file_bytes);
        let mut batch = LogBatch::new();
        self.stage(i, &mut ready, &mut batch)?;
        if !batch.is_empty() {
            self.wal.write(batch)?;
        }
        self.finish_ready(i, ready);
        Ok(())
    }

    /// Compacts each shard's log up to what both the engine's durable state
    /// and the newest snapshot cover, and asks for snapshots of the shards
    /// that keep old WAL segments alive.
    fn maybe_compact(&mut self) {
        if self.last_compact.elapsed() < Duration::from_millis(self.config.compact_interval_ms) {
            return;
        }
        self.last_compact = Instant::now();
        for shard in &mut self.shards {
            let durable = self.engine.durable_applied_index(shard.log_id);
            let snapshot = lock(&shard.snapshots.newest).as_ref().map_or(0, |s| s.0);
            let applied = shard.applied.load(Ordering::SeqCst);
            let upto = durable.min(snapshot).min(applied);
            if let Err(e) = shard.raw.mut_store().compact_to(upto) {
                tracing::warn!(shard = shard.id, error = %e, "log compaction failed");
            }
        }
        if let Some(group) = &mut self.cluster
            && let Err(e) = group.compact()
        {
            tracing::warn!(error = %e, "cluster group: log compaction failed");
        }
        self.snapshot_pinning_shards();
    }

    /// Once the WAL holds more than `wal_segments_before_snapshot` segments,
    /// the shards whose oldest live entry is in the oldest segment take a
    /// snapshot (after it, and the engine's next checkpoint, their log is
    /// compacted and the segment freed).
    fn snapshot_pinning_shards(&self) {
        let limit = self.config.wal_segments_before_snapshot;
        let segments = self.wal.segments();
        if limit == 0 || segments.len() <= limit {
            return;
        }
        let firsts = self.wal.first_segment_of_streams();
        let Some(oldest) = firsts.values().min().copied() else {
            return;
        };
        for shard in &self.shards {
            let stream = crate::shards::stream_id(shard.id);
            if firsts.get(&stream) == Some(&oldest)
                && !shard.snapshots.wanted.load(Ordering::SeqCst)
            {
                tracing::debug!(
                    shard = shard.id,
                    segment = oldest,
                    "the shard pins the oldest WAL segment; snapshotting it"
                );
                request_snapshot(shard);
            }
        }
    }
}

/// A ready whose entries are durable: the messages that waited for that
/// are sent, raft advances, and what the light ready carries is sent too.
/// Returns whether the commit index moved, and the entries now committed.
fn advance_durable(
    transport: &dyn Transport,
    me: u64,
    raw: &mut RawNode<ShardStorage>,
    group: u32,
    mut ready: Ready,
) -> (bool, Vec<raft::prelude::Entry>) {
    let persisted = ready.take_persisted_messages();
    send_messages(transport, me, raw, group, persisted);
    let mut light = raw.advance(ready);
    send_messages(transport, me, raw, group, light.take_messages());
    (
        light.commit_index().is_some(),
        light.take_committed_entries(),
    )
}

/// The other voter `eligible` allows with the most entries (raft sends it
/// the rest before it takes over), from a leader's status.
pub(crate) fn most_caught_up_voter(
    status: &ShardStatus,
    me: u64,
    eligible: impl Fn(u64) -> bool,
) -> Option<u64> {
    status
        .progress
        .iter()
        .filter(|&&(id, _)| id != me && status.voters.contains(&id) && eligible(id))
        .max_by_key(|&&(_, matched)| matched)
        .map(|&(id, _)| id)
}

/// A leader that is not to stay in a group hands it to its most caught-up
/// placeable voter of the incoming configuration (raft sends it the
/// missing entries first) before any change removes it.
fn hand_to_placeable(raw: &mut RawNode<ShardStorage>, status: &ShardStatus, placement: &Placement) {
    if raw.raft.lead_transferee.is_some() {
        return;
    }
    if let Some(to) = most_caught_up_voter(status, status.leader, |id| placement.holds(id)) {
        tracing::info!(
            group = status.shard,
            to,
            "placement: a leader that is not to stay hands over"
        );
        raw.transfer_leader(to);
    }
}

/// One membership change of a group this node leads (a shard, or the
/// cluster group) toward the placement, which `next` derives from the
/// group's `status`. None while a change is pending: raft turns a second
/// into an empty entry. A group created here has its first configuration
/// only in its meta file, and a member joining by the log (no snapshot)
/// would start from no configuration at all: writing this node in as a
/// voter once puts the configuration into the log first. Returns whether
/// the configuration is changing (then leadership stays put).
fn change_membership(
    raw: &mut RawNode<ShardStorage>,
    me: u64,
    status: &ShardStatus,
    next: impl FnOnce(&ShardStatus) -> Option<crate::placement::Step>,
) -> bool {
    if raw.raft.pending_conf_index > raw.raft.raft_log.applied {
        return true;
    }
    let meta = raw.store().meta();
    let step = if meta.conf_index() == 0 && meta.snapshot_index == 0 {
        Some(crate::placement::Step::Promote(me))
    } else {
        next(status)
    };
    let Some(step) = step else {
        return false;
    };
    tracing::info!(
        group = status.shard,
        ?step,
        "placement: proposing a membership change"
    );
    if let Err(e) = raw.propose_conf_change(Vec::new(), step.change()) {
        tracing::debug!(group = status.shard, error = %e, "placement change refused");
    }
    true
}

fn request_snapshot(shard: &Shard) {
    shard.snapshots.wanted.store(true, Ordering::SeqCst);
    let _ = shard.apply.try_send(ApplyTask::CheckSnapshot);
}

/// An input the stopped loop never handled: nothing was proposed or read.
fn refuse_queued(input: Input) {
    match input {
        Input::Propose { reply, .. } => reply.send(Err(Error::Stopped)),
        Input::Read { reply, .. } | Input::Membership { reply, .. } => {
            reply.send(Err(Error::Stopped));
        }
        _ => {}
    }
}

fn fetch_and_install(fetch: &Fetch, engine: &Engine) -> Result<PathBuf> {
    let mut attempt = 1;
    loop {
        let started = Instant::now();
        let mut fetched = started;
        let result = fetch.run().and_then(|verified| {
            fetched = Instant::now();
            install::install_file(engine, &verified).map(|records| (verified.path, records))
        });
        match result {
            Ok((path, records)) => {
                fetch.rebuilds.finish(fetch.shard, Some(records));
                tracing::info!(
                    shard = fetch.shard,
                    records,
                    file_bytes = fetch.reference.file_bytes,
                    fetch_ms = (fetched - started).as_millis() as u64,
                    install_ms = fetched.elapsed().as_millis() as u64,
                    "snapshot installed"
                );
                return Ok(path);
            }
            Err(e) if attempt >= INSTALL_ATTEMPTS => {
                fetch.rebuilds.finish(fetch.shard, None);
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(shard = fetch.shard, attempt, error = %e, "snapshot fetch failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
                attempt += 1;
            }
        }
    }
}

/// Steps a raft message into a shard. A heartbeat's commit index is capped at
/// the follower's last index: a member whose data was wiped comes back with an
/// empty log while the leader still remembers what it had matched, and raft
/// must then probe it (and send a snapshot), not fail on the commit index.
///
/// On the leader, a rejection showing a follower's log ends below what the
/// leader had matched means the follower lost its data: its progress restarts
/// from what it has, so raft probes it down to a snapshot. (raft itself takes
/// such a rejection for a stale message and would wait forever.) Lowering a
/// match only makes the commit rule more careful.
///
/// A vote or pre-vote request from a node outside this node's configuration
/// is dropped: a member removed from a group without learning it (it was
/// cut off, or the entry that removed it never reached it) would otherwise
/// win votes of the members that remain once their leader is gone, lead a
/// configuration that no longer exists, and stop the group from electing a
/// real leader. (A voter whose configuration lags a promotion refuses the
/// new voter until it applies it: that delays an election, never splits
/// one.)
fn step(raw: &mut RawNode<ShardStorage>, group: u32, mut message: Message) {
    let vote = matches!(
        message.get_msg_type(),
        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
    );
    if vote && raw.raft.prs().get(message.from).is_none() {
        tracing::debug!(
            group,
            from = message.from,
            "a vote request from outside the configuration dropped"
        );
        return;
    }
    match message.get_msg_type() {
        MessageType::MsgHeartbeat => {
            message.commit = message.commit.min(raw.raft.raft_log.last_index());
        }
        MessageType::MsgAppendResponse if message.reject && raw.raft.state == StateRole::Leader => {
            let hint = message.reject_hint;
            if let Some(pr) = raw.raft.mut_prs().get_mut(message.from)
                && hint < pr.matched
            {
                tracing::warn!(
                    group,
                    follower = message.from,
                    had = pr.matched,
                    has = hint,
                    "a follower lost its log; rebuilding it"
                );
                pr.matched = hint;
                pr.become_probe();
            }
        }
        _ => {}
    }
    if let Err(e) = raw.step(message) {
        tracing::debug!(group, error = %e, "raft message refused");
    }
}

/// Sends a shard's messages. A snapshot message carries only a file
/// reference, so handing it to the transport is the whole send: raft is told
/// at once (`report_snapshot`), the follower's progress goes back to probing,
/// and a follower whose install failed is found behind and sent one again.
/// A message the transport could not queue (peer unreachable, queue full) is
/// reported (`report_unreachable`), so raft stops streaming appends to that
/// follower and probes it instead.
fn send_messages(
    transport: &dyn Transport,
    me: u64,
    raw: &mut RawNode<ShardStorage>,
    group: u32,
    messages: Vec<Message>,
) {
    for message in messages {
        let to = message.to;
        let snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
        let queued = transport.send(
            me,
            to,
            Envelope::Raft {
                shard: group,
                message,
            },
        );
        if snapshot {
            let status = if queued {
                SnapshotStatus::Finish
            } else {
                SnapshotStatus::Failure
            };
            raw.report_snapshot(to, status);
        }
        if !queued {
            raw.report_unreachable(to);
        }
    }
}
