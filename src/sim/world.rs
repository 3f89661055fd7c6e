//! The simulated world: nodes, virtual clock, workload and fault schedule.

use super::net::{Liar, Net, NetProfile};
use super::{RunReport, SimOptions};
use crate::proto::{
    Client, ControlUnit, CutPolicy, Event, Node, NodeId, OpId, OpStatus, ProtoConfig, Resolution,
    Role, SectionMask, Topology,
};
use crate::rng::SplitMix64;
use crate::wire::{Entry, FrameHeader, FrameReader};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use smallvec::SmallVec;
use std::collections::{BTreeMap, VecDeque};
use zerocopy::FromBytes;

/// An entry as the oracle keeps it.
pub(super) type OwnedEntry = (u8, u64, Option<Vec<u8>>, bool);

/// A host's protocol node, or nothing while it is down.
pub(super) enum Slot {
    Up(crate::proto::Node),
    Down { restart_at_us: u64 },
}

/// One simulated host: its node and what survives its crashes.
pub(super) struct Host {
    pub id: NodeId,
    pub is_cu: bool,
    pub slot: Slot,
    pub boots: u32,
    /// What a control unit persisted: its highest epoch, written after every step that
    /// raised it and before the step's frames go out (as the daemon does), and restored
    /// into the next life. Survives crashes.
    pub persisted_epoch: u64,
    /// `persisted_epoch` when this life started: an epoch this unit owns and acts in must be
    /// above it (one at or below may be one an earlier life announced).
    pub life_floor_epoch: u64,
}

#[derive(Debug, Default, Clone)]
pub(super) struct ClientTrack {
    pub last_op: Option<u64>,
    pub last_epoch: u64,
    pub cookies: VecDeque<(u64, SectionMask)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Faults,
    Settle,
    Quiesce,
}

pub(super) struct World {
    pub rng: SplitMix64,
    pub net: Net,
    pub cfg: ProtoConfig,
    pub nodes: Vec<Host>,
    pub now_us: u64,
    pub opts: SimOptions,
    pub report: RunReport,
    trace: VecDeque<String>,
    // Oracle.
    pub log: HashMap<(u32, u64, u64), Vec<OwnedEntry>>,
    /// Commit marks: the highest op reported committed per (channel, epoch). A BTreeMap so that
    /// checks walk it in the same order on every run of a seed.
    pub marks: BTreeMap<(u32, u64), u64>,
    /// What each takeover decided per (channel, epoch): (cut, highest op held).
    pub cuts: HashMap<(u32, u64), (u64, u64)>,
    /// Conditions reported once per run: (invariant, node, epoch or 0). They persist, so
    /// reporting them on every check would only crowd out other violations.
    pub reported_once: HashSet<(&'static str, NodeId, u64)>,
    /// Candidates elected while every other control unit was down or joining: the joiner's
    /// vote made the majority.
    joining_voted: Vec<NodeId>,
    pub client_track: HashMap<(NodeId, u32), ClientTrack>,
    pub standby_track: HashMap<(NodeId, u32), u64>,
    /// The highest client ack a primary reported, by channel, then (epoch, ack) in the order
    /// the epochs first showed (a channel sees a handful; the newest is looked up most).
    pub acked_hw: Vec<Vec<(u64, u64)>>,
    /// The highest epoch each node (by index in `nodes`) received in a valid frame from the
    /// epoch's owner, in its current life (0: none).
    pub max_epoch_rx: Vec<u64>,
    pub resolutions: HashMap<u32, (Resolution, u64)>,
    /// inv9: when each client channel was last seen without history, by (client, channel).
    pub client_unknown_us: HashMap<(NodeId, u32), u64>,
    /// inv9: channels a takeover resolved and may replay as it finishes, by (unit, channel).
    pub failover_resolved: HashSet<(NodeId, u32)>,
    buf: Vec<u8>,
    /// The lying line card and its channels (see [`super::FaultKinds::liar`]).
    liar: Option<(NodeId, Vec<u32>)>,
    /// A planned crash of a failover's candidate: the step it waits for (0 querying,
    /// 1 resolving, 2 replaying as the new primary).
    candidate_plan: Option<usize>,
    /// With `fingerprint`: the hash of every trace line so far, and their count.
    trace_fp: u64,
    trace_count: u64,
}

impl World {
    pub fn trace(&mut self, line: impl FnOnce() -> String) {
        if !self.net.notes.is_empty() {
            self.flush_net_notes();
        }
        if self.opts.verbose || self.opts.trace_lines > 0 || self.opts.fingerprint {
            let l = format!("[{:>9}us] {}", self.now_us, line());
            self.hash_trace(&l);
            if !(self.opts.verbose || self.opts.trace_lines > 0) {
                return;
            }
            if self.opts.verbose {
                println!("  {l}");
            }
            if self.trace.len() == self.opts.trace_lines.max(1) {
                self.trace.pop_front();
            }
            self.trace.push_back(l);
        }
    }

    /// With `fingerprint`: every trace line, in order, goes into the run's fingerprint.
    fn hash_trace(&mut self, l: &str) {
        if self.opts.fingerprint {
            self.trace_fp = xxhash_rust::xxh3::xxh3_64_with_seed(l.as_bytes(), self.trace_fp);
            self.trace_count += 1;
        }
    }

    /// A hash of the whole run so far: the trace lines, the generator, the clock, every node's
    /// state, the oracle and the network (see `--fingerprint`). Maps read as 0 where a key is
    /// absent list only their non-zero entries.
    fn fingerprint(&self) -> u64 {
        use std::fmt::Write;
        let mut s = String::new();
        let mut rng = self.rng.clone();
        let mut r = self.report.clone();
        r.trace.clear();
        let _ = write!(
            s,
            "{:x} {} {} {:x} {r:?}",
            self.trace_fp,
            self.trace_count,
            self.now_us,
            rng.next_u64()
        );
        let channels = self.cfg.topology.channels() as u32;
        for n in &self.nodes {
            let _ = write!(
                s,
                "|{} {} {} {} ",
                n.id, n.boots, n.persisted_epoch, n.life_floor_epoch
            );
            match &n.slot {
                Slot::Down { restart_at_us } => {
                    let _ = write!(s, "down {restart_at_us}");
                }
                Slot::Up(node) => {
                    let _ = write!(s, "{:?} t{}", node.counters(), node.poll_timeout());
                    if let Some(c) = node.as_cu() {
                        let _ = write!(
                            s,
                            " {:?} {:x} {:x} {:x} {} {}",
                            c.role(),
                            c.epoch(),
                            c.highest_epoch(),
                            c.sync_mask(),
                            c.bulk_in_flight_len(),
                            c.events_dropped()
                        );
                        for ch in 0..channels {
                            let _ = write!(
                                s,
                                " [{} {} {} {:?} {} {} {:?} {:x}]",
                                c.next_op(ch),
                                c.commit_watermark(ch),
                                c.client_acked(ch),
                                c.standby_position(ch),
                                c.ring_len(ch),
                                c.ring_capacity(ch),
                                c.replay_progress(ch),
                                c.state(ch).map_or(0, |st| st.full_digest())
                            );
                        }
                    }
                    if let Some(c) = node.as_client() {
                        let _ = write!(s, " {:x} {:?}", c.epoch(), c.primary());
                        for ch in c.channels() {
                            let _ = write!(
                                s,
                                " [{ch} {:?} {} {:x}]",
                                c.applied(ch).map(OpId::get),
                                c.is_unknown(ch),
                                c.state(ch).map_or(0, |st| st.full_digest())
                            );
                        }
                    }
                }
            }
        }
        // Maps as sorted `key=value` lists, sets as sorted keys: independent of hash order.
        fn pairs<K: std::fmt::Debug, V: std::fmt::Debug>(
            it: impl IntoIterator<Item = (K, V)>,
        ) -> String {
            sorted_strings(it.into_iter().map(|(k, v)| format!("{k:?}={v:?}")))
        }
        fn keys<K: std::fmt::Debug>(it: impl IntoIterator<Item = K>) -> String {
            sorted_strings(it.into_iter().map(|k| format!("{k:?}")))
        }
        fn sorted_strings(it: impl Iterator<Item = String>) -> String {
            let mut v: Vec<String> = it.collect();
            v.sort();
            v.join(",")
        }
        let _ = write!(
            s,
            "|log {} marks {:?} cuts {} resolutions {} client_track {} standby_track {} acked_hw {} max_epoch_rx {} unknown {} resolved {} once {} joining {:?} plan {:?}",
            self.log.len(),
            self.marks,
            pairs(&self.cuts),
            pairs(&self.resolutions),
            pairs(&self.client_track),
            pairs(&self.standby_track),
            pairs(
                self.acked_hw
                    .iter()
                    .enumerate()
                    .flat_map(|(ch, e)| e.iter().map(move |&(epoch, hw)| ((ch as u32, epoch), hw)))
                    .filter(|(_, v)| *v != 0)
            ),
            pairs(
                self.max_epoch_rx
                    .iter()
                    .zip(&self.nodes)
                    .filter(|(v, _)| **v != 0)
                    .map(|(v, n)| (n.id, v))
            ),
            pairs(&self.client_unknown_us),
            keys(&self.failover_resolved),
            keys(&self.reported_once),
            self.joining_voted,
            self.candidate_plan,
        );
        let _ = write!(s, "|net {}", self.net.fingerprint(self.now_us));
        xxhash_rust::xxh3::xxh3_64(s.as_bytes())
    }

    /// Per-datagram fault notes of the network (verbose runs only), in order, with their time.
    fn flush_net_notes(&mut self) {
        let notes = std::mem::take(&mut self.net.notes);
        for (at, l) in notes {
            let l = format!("[{at:>9}us] {l}");
            self.hash_trace(&l);
            if self.opts.verbose {
                println!("  {l}");
            }
            if self.trace.len() == self.opts.trace_lines.max(1) {
                self.trace.pop_front();
            }
            self.trace.push_back(l);
        }
    }

    /// A violation of a client-content invariant (inv1, inv3, inv5, inv7, inv9) on the lying line
    /// card's own channels while it lies: what it reported was false, so what the primary did
    /// for it cannot be held against the protocol. Every other invariant, and these same ones
    /// for every other client, still count.
    fn exempt_for_liar(&self, msg: &str) -> bool {
        let Some((liar, channels)) = &self.liar else {
            return false;
        };
        if !self.net.liar.is_some_and(|l| l.lying) {
            return false;
        }
        let client = format!("client {liar} ");
        ["inv1: ", "inv3: ", "inv5: ", "inv7: ", "inv9: "]
            .iter()
            .any(|p| msg.starts_with(p) && msg.contains(&client))
            || channels
                .iter()
                .any(|c| msg.starts_with(&format!("inv7: replay of ch {c} ")))
    }

    /// Primary-only entries stay on the control units: a frame to a client that carries one
    /// (in an UPDATE or an op of an UPDATE_RUN) leaks them, even though the client would not
    /// apply it.
    fn check_no_private_entries(&mut self, src: NodeId, dst: NodeId, frame: &[u8]) {
        let leaked = FrameReader::new(frame).is_ok_and(|f| {
            f.msgs().any(
                |m| matches!(m, crate::wire::Msg::Update(u) if u.fixed.private_count.get() > 0),
            )
        });
        if leaked && self.reported_once.insert(("private", src, u64::from(dst))) {
            self.violation(format!(
                "private: cu {src} sent primary-only entries to client {dst}"
            ));
        }
    }

    pub fn violation(&mut self, msg: String) {
        if self.exempt_for_liar(&msg) {
            self.report.liar_exempt_violations += 1;
            self.trace(|| format!("EXEMPT (lying client): {msg}"));
            return;
        }
        if self.report.violations.len() < 20 {
            self.trace(|| format!("VIOLATION: {msg}"));
            self.report.violations.push(msg);
        }
    }

    pub fn cu(&self, i: usize) -> Option<&ControlUnit> {
        match &self.nodes[i].slot {
            Slot::Up(n) => n.as_cu(),
            Slot::Down { .. } => None,
        }
    }

    pub fn cu_mut(&mut self, i: usize) -> Option<&mut ControlUnit> {
        match &mut self.nodes[i].slot {
            Slot::Up(n) => n.as_cu_mut(),
            Slot::Down { .. } => None,
        }
    }

    pub fn client(&self, i: usize) -> Option<&Client> {
        match &self.nodes[i].slot {
            Slot::Up(n) => n.as_client(),
            Slot::Down { .. } => None,
        }
    }

    pub fn node_index(&self, id: NodeId) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .expect("node exists")
    }

    /// The live primary with the highest epoch.
    pub fn primary(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter_map(|i| {
                self.cu(i)
                    .filter(|c| c.role() == Role::Primary)
                    .map(|c| (c.epoch(), i))
            })
            .max()
            .map(|(_, i)| i)
    }

    fn step_node(&mut self, i: usize, input: Option<&[u8]>) {
        let now = self.now_us;
        let Slot::Up(n) = &mut self.nodes[i].slot else {
            return;
        };
        match input {
            Some(b) => n.handle_datagram(now, b),
            None => n.handle_timeout(now),
        }
        self.drain(i);
    }

    /// Takes every datagram and event out of node `i`.
    pub fn drain(&mut self, i: usize) {
        let now = self.now_us;
        let src = self.nodes[i].id;
        self.persist_epoch(i);
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(self.cfg.max_frame_bytes, 0);
        loop {
            let t = match &mut self.nodes[i].slot {
                Slot::Up(n) => n.poll_transmit(now, &mut buf),
                Slot::Down { .. } => None,
            };
            let Some(t) = t else { break };
            if self.cfg.topology.clients.contains(&t.dst) {
                self.check_no_private_entries(src, t.dst, &buf[..t.len]);
            }
            self.net.send(&mut self.rng, now, src, t.dst, &buf[..t.len]);
        }
        self.buf = buf;
        loop {
            let e = match &mut self.nodes[i].slot {
                Slot::Up(n) => n.poll_event(),
                Slot::Down { .. } => None,
            };
            let Some(e) = e else { break };
            self.on_event(i, e);
        }
        self.note_client_unknown(i);
        if let Slot::Up(n) = &self.nodes[i].slot
            && let Some(c) = n.as_cu()
            && c.role() == Role::Primary
        {
            let epoch = c.epoch();
            for (ch, hws) in self.acked_hw.iter_mut().enumerate() {
                let a = c.client_acked(ch as u32);
                match hws.iter_mut().rev().find(|(e, _)| *e == epoch) {
                    Some((_, hw)) => *hw = (*hw).max(a),
                    None => hws.push((epoch, a)),
                }
            }
        }
    }

    /// Models the daemon's state file: before a control unit's frames leave, its highest
    /// epoch is on "disk". Also checks that a unit never acts in an epoch of its own at or
    /// below what an earlier life persisted.
    fn persist_epoch(&mut self, i: usize) {
        let Some(c) = self.cu(i) else { return };
        let (id, epoch, highest) = (c.id, c.epoch(), c.highest_epoch());
        let floor = self.nodes[i].life_floor_epoch;
        if epoch != 0
            && epoch <= floor
            && self.cfg.topology.epoch_owner(epoch) == Some(id)
            && self.reported_once.insert(("inv-epoch", id, epoch))
        {
            self.violation(format!(
                "inv-epoch: cu {id} acts in its own epoch {epoch:#x}, not above the {floor:#x} an earlier life persisted"
            ));
        }
        let n = &mut self.nodes[i];
        n.persisted_epoch = n.persisted_epoch.max(highest);
    }

    fn on_event(&mut self, i: usize, e: Event) {
        let id = self.nodes[i].id;
        match e {
            Event::ClientAcked { .. } => {}
            Event::Committed {
                channel,
                epoch,
                through,
            } => {
                let (epoch, through) = (epoch.get(), through.get());
                let m = self.marks.entry((channel, epoch)).or_insert(0);
                *m = (*m).max(through);
                // A commit in an epoch the newest primary has superseded: it must have kept it.
                if let Some(p) = self.primary()
                    && p != i
                {
                    self.check_commit_kept(p, channel, epoch, through);
                }
            }
            Event::StandbyApplied {
                channel,
                op,
                failover,
            } => {
                let op = op.get();
                if self.opts.trace_channel == Some(channel) {
                    self.trace(|| {
                        format!("standby {id} ch {channel} applied op {op} failover {failover}")
                    });
                }
                let last = self.standby_track.get(&(id, channel)).copied();
                if let Some(l) = last
                    && op != l + 1
                {
                    self.violation(format!(
                        "inv1: standby {id} ch {channel} applied op {op} after {l}"
                    ));
                }
                self.standby_track.insert((id, channel), op);
                if !failover {
                    let epoch = self.cu(i).map_or(0, |c| c.epoch());
                    let hw = self
                        .acked_hw
                        .get(channel as usize)
                        .and_then(|hws| hws.iter().rev().find(|(e, _)| *e == epoch))
                        .map_or(0, |&(_, hw)| hw);
                    if op > hw {
                        self.violation(format!(
                            "inv2: standby {id} ch {channel} applied op {op} before its ack (acked {hw}, epoch {epoch:#x})"
                        ));
                    }
                }
            }
            Event::ClientApplied {
                channel,
                op,
                epoch,
                cookie,
            } => {
                let (op, epoch) = (op.get(), epoch.get());
                if self.opts.trace_channel == Some(channel) {
                    self.trace(|| format!("client {id} ch {channel} applied op {op} epoch {epoch:#x} cookie {cookie:#x}"));
                }
                let max_seen = self.max_epoch_rx[i];
                if epoch < max_seen {
                    self.violation(format!(
                        "inv6: client {id} ch {channel} applied op {op} from epoch {epoch:#x} after seeing epoch {max_seen:#x}"
                    ));
                }
                let t = self.client_track.entry((id, channel)).or_default();
                let bad = t.last_op.is_some_and(|l| op != l + 1);
                let last = t.last_op;
                t.last_op = Some(op);
                t.last_epoch = epoch;
                t.cookies.push_back((op, cookie));
                if t.cookies.len() > self.cfg.window_ops {
                    t.cookies.pop_front();
                }
                if bad {
                    self.violation(format!(
                        "inv1: client {id} ch {channel} applied op {op} after {last:?}"
                    ));
                }
            }
            Event::ClientReplayed {
                channel,
                base_op,
                sections: _,
                epoch,
            } => {
                let (base_op, epoch) = (base_op.get(), epoch.get());
                let max_seen = self.max_epoch_rx[i];
                if epoch < max_seen {
                    self.violation(format!(
                        "inv6: client {id} ch {channel} took a replay from epoch {epoch:#x} after seeing epoch {max_seen:#x}"
                    ));
                }
                let t = self.client_track.entry((id, channel)).or_default();
                let bad = t.last_op.is_some_and(|l| base_op < l) && epoch <= t.last_epoch;
                let last = t.last_op;
                t.last_op = Some(base_op);
                t.last_epoch = epoch;
                t.cookies.clear();
                if bad {
                    self.violation(format!(
                        "inv3: client {id} ch {channel} went back from {last:?} to {base_op} without a higher epoch"
                    ));
                }
                self.trace(|| format!("client {id}: {e}"));
            }
            Event::ChannelResolved {
                channel,
                resolution,
                cut,
                ..
            } => {
                let cut = cut.get();
                self.resolutions.insert(channel, (resolution, cut));
                self.failover_resolved.insert((id, channel));
                if let (Some(c), Event::ChannelResolved { held, .. }) = (self.cu(i), e) {
                    self.cuts.insert((channel, c.epoch()), (cut, held.get()));
                }
                self.trace(|| format!("cu {id}: {e}"));
            }
            Event::ReplayStarted {
                channel,
                client,
                sections,
                full,
                bytes,
                full_bytes,
                base_op,
            } => self.on_replay_started(
                i,
                channel,
                client,
                sections,
                full,
                bytes,
                full_bytes,
                base_op.get(),
            ),
            Event::TookOver { .. } => {
                self.report.failovers += 1;
                self.failover_resolved.retain(|&(n, _)| n != id);
                let cu = self.cu(i).expect("event from a live control unit");
                let overhead = size_of::<crate::wire::BulkEntry>() as u64 + 4;
                let full: u64 = (0..self.cfg.topology.channels() as u32)
                    .map(|ch| {
                        let s = cu.state(ch).expect("channel");
                        s.value_bytes(SectionMask::ALL) + s.entry_count(SectionMask::ALL) * overhead
                    })
                    .sum();
                self.report.full_resync_bytes += full;
                self.trace(|| format!("cu {id}: {e}"));
                if let Some(k) = self.joining_voted.iter().position(|&n| n == id) {
                    self.joining_voted.swap_remove(k);
                    self.report.joining_vote_takeovers += 1;
                    self.trace(|| format!("cu {id} took over on a joining unit's vote"));
                }
                self.check_commits_kept(i);
            }
            Event::FailoverStarted { operator, .. } => {
                self.trace(|| format!("cu {id}: {e}"));
                self.report.switchover_takeovers += u64::from(operator);
                if !operator && self.others_down_or_joining(i) {
                    self.joining_voted.push(id);
                }
            }
            Event::ChannelTransferred { channel, applied } => {
                self.standby_track.insert((id, channel), applied.get());
            }
            Event::RoleChanged { role, .. } => {
                if role == Role::Joining {
                    self.standby_track.retain(|(n, _), _| *n != id);
                }
                self.trace(|| format!("cu {id}: {e}"))
            }
            Event::TransferComplete { .. }
            | Event::StandbyJoined { .. }
            | Event::StandbyDropped { .. }
            | Event::KeyMismatch { .. }
            | Event::ReplayFinished { .. } => self.trace(|| format!("cu {id}: {e}")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_replay_started(
        &mut self,
        i: usize,
        channel: u32,
        client: NodeId,
        sections: SectionMask,
        full: bool,
        bytes: u64,
        full_bytes: u64,
        base_op: u64,
    ) {
        if full {
            self.report.full_replays += 1;
        } else {
            self.report.selective_replays += 1;
        }
        self.report.sections_replayed += u64::from(sections.count());
        self.report.replay_bytes += bytes;
        self.report.replay_full_equiv_bytes += full_bytes;
        self.trace(|| format!("replay ch {channel} -> client {client}: sections {sections:#x} full={full} bytes {bytes} (full {full_bytes}) base {base_op}"));
        self.check_replay_target(i, channel, client);
        // inv7: the replay covers every section in which the client differs, and a selective
        // replay marks only sections touched by ops the client applied above the cut.
        let ci = self.node_index(client);
        let Some(cl) = self.client(ci) else { return };
        if cl.is_unknown(channel) {
            return;
        }
        let primary = self
            .cu(i)
            .and_then(|c| c.state(channel))
            .expect("replay from live primary");
        let differ = cl
            .state(channel)
            .expect("client channel")
            .differing_sections(primary);
        if !differ.difference(sections).is_empty() {
            self.violation(format!(
                "inv7: replay of ch {channel} to client {client} marks {sections:#x} but the client differs in {differ:#x}"
            ));
        }
        if !full
            && let Some((Resolution::Ahead { client_op }, cut)) =
                self.resolutions.get(&channel).copied()
            && let Some(t) = self.client_track.get(&(client, channel))
            && t.cookies.front().is_some_and(|&(op, _)| op <= cut + 1)
        {
            let expect = t
                .cookies
                .iter()
                .filter(|&&(op, _)| op > cut && op <= client_op)
                .fold(SectionMask::EMPTY, |m, &(_, c)| m | c);
            if !sections.difference(expect).is_empty() {
                self.violation(format!(
                    "inv7: replay of ch {channel} marks {sections:#x}, beyond the cookies {expect:#x} of ops {}..={client_op}",
                    cut + 1
                ));
            }
        }
    }

    fn submit(&mut self) {
        // Mostly the real primary; sometimes a stale one, to prove fencing.
        let primaries: SmallVec<[usize; 8]> = (0..self.nodes.len())
            .filter(|&i| self.cu(i).is_some_and(|c| c.role() == Role::Primary))
            .collect();
        let Some(&best) = primaries
            .iter()
            .max_by_key(|&&i| self.cu(i).map(|c| c.epoch()))
        else {
            return;
        };
        let target = if primaries.len() > 1 && self.rng.chance(0.2) {
            primaries[self.rng.below(primaries.len() as u64) as usize]
        } else {
            best
        };
        let channel = self.rng.below(self.cfg.topology.channels() as u64) as u32;
        let n = self.rng.range(1, 3);
        let mut owned: Vec<OwnedEntry> = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let section = self.rng.below(12) as u8;
            let key = self.rng.below(24);
            let private = self.rng.chance(0.1);
            let value = if self.rng.chance(0.1) {
                None
            } else {
                let len = self.rng.range(1, 24) as usize;
                Some(
                    (0..len)
                        .map(|_| self.rng.next_u64() as u8)
                        .collect::<Vec<u8>>(),
                )
            };
            owned.push((section, key, value, private));
        }
        let entries: SmallVec<[Entry<'_>; 3]> = owned
            .iter()
            .map(|(s, k, v, p)| Entry {
                section: *s,
                key: *k,
                value: v.as_deref(),
                private: *p,
            })
            .collect();
        let now = self.now_us;
        let Some(cu) = self.cu_mut(target) else {
            return;
        };
        let epoch = cu.epoch();
        if let Ok(op) = cu.submit(now, channel, &entries) {
            if self.opts.trace_channel == Some(channel) {
                let cookie = owned
                    .iter()
                    .filter(|e| !e.3)
                    .fold(0u64, |m, e| m | 1 << e.0);
                let id = self.nodes[target].id;
                self.trace(|| {
                    format!(
                        "submit to {id} ch {channel} op {op} epoch {epoch:#x} cookie {cookie:#x}"
                    )
                });
            }
            drop(entries);
            self.report.submitted += 1;
            if self.log.insert((channel, epoch, op), owned).is_some() {
                self.violation(format!(
                    "op {op} of epoch {epoch:#x} on ch {channel} assigned twice"
                ));
            }
            self.drain(target);
        }
    }

    /// With three or more control units: every other one is down or joining, and at least one
    /// is joining (so a majority for `i` needs a joining unit's vote).
    fn others_down_or_joining(&self, i: usize) -> bool {
        let others = || (0..self.nodes.len()).filter(move |&j| j != i && self.nodes[j].is_cu);
        self.cfg.topology.control_units.len() >= 3
            && others().all(|j| self.cu(j).is_none_or(|c| c.role() == Role::Joining))
            && others().any(|j| self.cu(j).is_some())
    }

    fn crash(&mut self, i: usize, down_us: u64) {
        let id = self.nodes[i].id;
        if self.primary() == Some(i) && self.cfg.topology.control_units.len() >= 3 {
            let mask = self.cu(i).map_or(0, |c| c.sync_mask());
            let outside: Vec<NodeId> = (0..self.nodes.len())
                .filter(|&j| j != i && self.nodes[j].is_cu)
                .filter_map(|j| self.cu(j).map(|c| c.id))
                .filter(|&n| {
                    let idx = self.cfg.topology.cu_index(n).expect("cu");
                    mask & (1 << idx) == 0
                })
                .collect();
            if !outside.is_empty() {
                self.report.primary_crashes_out_of_sync += 1;
                self.trace(|| {
                    format!("primary {id} crashes while cu {outside:?} is out of its sync set")
                });
            }
        }
        self.nodes[i].slot = Slot::Down {
            restart_at_us: self.now_us + down_us,
        };
        self.report.crashes += 1;
        self.standby_track.retain(|(n, _), _| *n != id);
        self.client_track.retain(|(n, _), _| *n != id);
        self.trace(|| format!("CRASH node {id} for {down_us}us"));
    }

    fn restart(&mut self, i: usize) {
        let id = self.nodes[i].id;
        self.nodes[i].boots += 1;
        let boot = self.nodes[i].boots;
        self.max_epoch_rx[i] = 0;
        self.nodes[i].slot = if self.nodes[i].is_cu {
            let persisted = self.nodes[i].persisted_epoch;
            self.nodes[i].life_floor_epoch = persisted;
            let mut c =
                ControlUnit::new(node_cfg(&self.cfg, id, boot), id, false, boot, self.now_us);
            if let Err(e) = c.restore_highest_epoch(persisted) {
                self.violation(format!("cu {id} refused its persisted epoch: {e}"));
            }
            Slot::Up(Node::Cu(Box::new(c)))
        } else {
            Slot::Up(Node::Client(Box::new(Client::new(
                node_cfg(&self.cfg, id, boot),
                id,
                true,
                boot,
                self.now_us,
            ))))
        };
        self.trace(|| format!("RESTART node {id} (boot {boot})"));
        self.drain(i);
    }

    /// Live control units holding a complete state.
    fn complete_cus(&self, except: usize) -> usize {
        (0..self.nodes.len())
            .filter(|&j| j != except)
            .filter(|&j| {
                self.cu(j).is_some_and(|c| {
                    matches!(c.role(), Role::Primary | Role::Standby | Role::Candidate)
                })
            })
            .count()
    }

    fn cus_down(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.is_cu && matches!(n.slot, Slot::Down { .. }))
            .count()
    }

    /// Whether crashing or isolating control unit `i` keeps a path to recovery. We model
    /// single failures of control units: a second one while a first is down, catching up or
    /// cut off may leave no standby with every committed op, or (with three or more) no
    /// majority to elect one; the protocol then rightly stays without a primary.
    fn can_crash_cu(&self, i: usize) -> bool {
        let Some(c) = self.cu(i) else { return false };
        if self.cus_down() > 0 || c.role() == Role::Candidate {
            return false;
        }
        if self.cfg.topology.control_units.len() >= 3 {
            let now = self.now_us;
            let others_sound = (0..self.nodes.len())
                .filter(|&j| j != i && self.nodes[j].is_cu)
                .all(|j| {
                    self.cu(j)
                        .is_some_and(|o| matches!(o.role(), Role::Primary | Role::Standby))
                        && !self.net.is_partitioned(self.nodes[j].id, now)
                });
            if !others_sound {
                return false;
            }
        }
        let all_complete = self.complete_cus(usize::MAX) == self.cfg.topology.control_units.len();
        match c.role() {
            // A standby that takes itself for eligible on a view the primary has since
            // replaced (it was dropped and is re-joining) holds no more than a re-joining one:
            // it must also be in the primary's own sync set. Seed 30408962: the primary was
            // crashed 20 ms after it dropped its only standby, which had just finished a
            // re-transfer but not joined; nobody held every committed op.
            Role::Primary => {
                all_complete
                    && (0..self.nodes.len()).any(|j| j != i && self.in_sync_standby(j, Some(i)))
            }
            Role::Standby => self.complete_cus(i) >= 1 && self.primary().is_some(),
            Role::Joining => true,
            Role::Candidate => false,
        }
    }

    fn fault(&mut self) {
        if self.opts.faults.any() && self.rng.chance(0.35) && self.extra_fault() {
            return;
        }
        let roll = self.rng.below(100);
        let cus: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_cu)
            .collect();
        let clients: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].is_cu)
            .collect();
        let primary = self.primary();
        match roll {
            0..=29 => {
                if let Some(p) = primary
                    && self.can_crash_cu(p)
                {
                    let d = self.rng.range(20_000, 300_000);
                    self.crash(p, d);
                }
            }
            30..=44 => {
                if let Some(p) = primary
                    && (self.cfg.topology.control_units.len() < 3 || self.can_crash_cu(p))
                {
                    let d = self.rng.range(30_000, 300_000);
                    self.isolate(p, d);
                }
            }
            45..=54 => {
                if let Some(p) = primary {
                    let eligible: Vec<NodeId> = cus
                        .iter()
                        .filter_map(|&j| self.cu(j).filter(|s| s.is_eligible()).map(|s| s.id))
                        .collect();
                    if let Some(&t) = eligible.first()
                        && let Some(c) = self.cu_mut(p)
                        && c.request_switchover(t).is_ok()
                    {
                        self.report.operator_switchovers += 1;
                        self.trace(|| format!("OPERATOR switchover to {t}"));
                        self.drain(p);
                    }
                }
            }
            55..=64 => {
                let j = cus[self.rng.below(cus.len() as u64) as usize];
                if Some(j) != primary && self.can_crash_cu(j) {
                    let d = self.rng.range(20_000, 300_000);
                    self.crash(j, d);
                }
            }
            65..=82 => {
                let j = clients[self.rng.below(clients.len() as u64) as usize];
                if self.client(j).is_some() {
                    let d = self.rng.range(5_000, 200_000);
                    self.crash(j, d);
                }
            }
            83..=91 => {
                let j = self.rng.below(self.nodes.len() as u64) as usize;
                let d = self.rng.range(20_000, 250_000);
                if !self.nodes[j].is_cu
                    || self.cfg.topology.control_units.len() < 3
                    || self.can_crash_cu(j)
                {
                    self.isolate(j, d);
                }
            }
            _ => {
                let a = self.rng.below(self.nodes.len() as u64) as usize;
                let b = self.rng.below(self.nodes.len() as u64) as usize;
                if a != b {
                    let d = self.rng.range(20_000, 200_000);
                    let (x, y) = (self.nodes[a].id, self.nodes[b].id);
                    self.net.cut(x, y, self.now_us + d);
                    self.report.partitions += 1;
                    self.trace(|| format!("PARTITION {x} <-> {y} for {d}us"));
                }
            }
        }
    }

    fn isolate(&mut self, i: usize, d: u64) {
        let id = self.nodes[i].id;
        let until = self.now_us + d;
        for j in 0..self.nodes.len() {
            if j != i {
                let other = self.nodes[j].id;
                self.net.cut(id, other, until);
            }
        }
        self.report.partitions += 1;
        self.trace(|| format!("ISOLATE node {id} for {d}us"));
    }

    /// One of the issue-9 faults in force, picked at random; false when none applied (the
    /// original schedule then runs instead).
    fn extra_fault(&mut self) -> bool {
        let f = self.opts.faults;
        let many_cus = self.cfg.topology.control_units.len() >= 3;
        let kinds: Vec<u8> = [
            (f.one_way, 0),
            (f.one_way, 1),
            (f.delay_spikes, 2),
            (f.corrupt, 3),
            (f.second_cu && many_cus, 4),
            (f.candidate_crash && many_cus, 5),
        ]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect();
        if kinds.is_empty() {
            return false;
        }
        match kinds[self.rng.below(kinds.len() as u64) as usize] {
            0 => self.one_way_cut(),
            1 => self.deaf_or_mute(),
            2 => self.slow_link(),
            3 => self.garbage_burst(),
            4 => self.second_cu_fault(),
            _ => self.plan_candidate_crash(),
        }
        true
    }

    fn random_node_pair(&mut self) -> Option<(NodeId, NodeId)> {
        let a = self.rng.below(self.nodes.len() as u64) as usize;
        let b = self.rng.below(self.nodes.len() as u64) as usize;
        (a != b).then(|| (self.nodes[a].id, self.nodes[b].id))
    }

    /// a→b dropped while b→a flows.
    fn one_way_cut(&mut self) {
        if let Some((x, y)) = self.random_node_pair() {
            let d = self.rng.range(20_000, 200_000);
            self.net.cut_one_way(x, y, self.now_us + d);
            self.report.oneway_partitions += 1;
            self.trace(|| format!("ONE-WAY PARTITION {x} -> {y} for {d}us ({y} -> {x} flows)"));
        }
    }

    /// A node that hears everyone but reaches no one (mute), or reaches everyone but hears no
    /// one (deaf). With three or more control units a control unit is only cut off under the
    /// same condition as a full isolation.
    fn deaf_or_mute(&mut self) {
        let j = self.rng.below(self.nodes.len() as u64) as usize;
        let mute = self.rng.chance(0.5);
        let d = self.rng.range(20_000, 250_000);
        if self.nodes[j].is_cu
            && self.cfg.topology.control_units.len() >= 3
            && !self.can_crash_cu(j)
        {
            return;
        }
        let id = self.nodes[j].id;
        let until = self.now_us + d;
        for k in 0..self.nodes.len() {
            if k != j {
                let other = self.nodes[k].id;
                if mute {
                    self.net.cut_one_way(id, other, until);
                } else {
                    self.net.cut_one_way(other, id, until);
                }
            }
        }
        self.report.oneway_partitions += 1;
        let what = if mute {
            "MUTE (hears all, reaches none)"
        } else {
            "DEAF (reaches all, hears none)"
        };
        self.trace(|| format!("ONE-WAY ISOLATE node {id} {what} for {d}us"));
    }

    /// Every datagram of one link held back by 1–5 heartbeat intervals for a while.
    fn slow_link(&mut self) {
        if let Some((x, y)) = self.random_node_pair() {
            let d = self.rng.range(20_000, 200_000);
            let hb = self.cfg.heartbeat_interval_us;
            let lo = self.rng.range(hb, 5 * hb);
            let hi = self.rng.range(lo, 5 * hb);
            self.net.slow_link(x, y, self.now_us + d, lo, hi);
            self.report.slow_links += 1;
            self.trace(|| format!("SLOW LINK {x} -> {y} for {d}us: +{lo}..={hi}us per datagram"));
        }
    }

    /// A burst of random datagrams at one node.
    fn garbage_burst(&mut self) {
        if let Some((x, y)) = self.random_node_pair() {
            let n = self.rng.range(1, 16);
            for _ in 0..n {
                self.net.send_garbage(&mut self.rng, self.now_us, x, y);
            }
            self.trace(|| format!("GARBAGE BURST {x} -> {y}: {n} datagrams"));
        }
    }

    /// Whether live control unit `k` holds every op the oracle saw committed.
    fn holds_every_commit(&self, k: usize) -> bool {
        let Some(c) = self.cu(k) else { return false };
        self.marks
            .iter()
            .all(|(&(ch, e), &through)| c.op_status(ch, e, through) == OpStatus::Committed)
    }

    /// A live control unit outside `except`, not cut off in either direction, that holds every
    /// committed op: an in-sync standby (eligible to take over), or with `primary_ok` also the
    /// primary. Without one, a second control-unit fault may lose committed state for good
    /// (nothing is persistent), so none is injected.
    fn commit_holder(&self, except: &[usize], primary_ok: bool) -> Option<usize> {
        let now = self.now_us;
        let primary = self.primary();
        (0..self.nodes.len())
            .filter(|k| !except.contains(k) && self.nodes[*k].is_cu)
            .filter(|&k| !self.net.is_partitioned(self.nodes[k].id, now))
            .filter(|&k| {
                self.in_sync_standby(k, primary)
                    || (primary_ok
                        && self.cu(k).is_some_and(|c| c.role() == Role::Primary)
                        && Some(k) == primary)
            })
            .find(|&k| self.holds_every_commit(k))
    }

    /// Whether control unit `k` is an in-sync standby: eligible by its own view and, while
    /// `primary` lives, in that primary's sync set too (a dropped standby re-joining still
    /// holds the view that named it).
    fn in_sync_standby(&self, k: usize, primary: Option<usize>) -> bool {
        self.cu(k).is_some_and(|c| {
            c.is_eligible()
                && primary.is_none_or(|p| {
                    let idx = self.cfg.topology.cu_index(c.id).expect("cu");
                    self.cu(p).is_some_and(|p| p.sync_mask() & (1 << idx) != 0)
                })
        })
    }

    /// Control units other than `i` that are down, re-joining or cut off.
    fn impaired_cus(&self, i: usize) -> Vec<NodeId> {
        let now = self.now_us;
        (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].is_cu)
            .filter(|&j| {
                self.cu(j).is_none_or(|c| c.role() == Role::Joining)
                    || self.net.is_partitioned(self.nodes[j].id, now)
            })
            .map(|j| self.nodes[j].id)
            .collect()
    }

    /// A crash or isolation of a control unit while another is down, re-joining or cut off,
    /// provided a live unit keeps every committed op and can take over.
    fn second_cu_fault(&mut self) {
        let cus: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_cu && self.cu(i).is_some())
            .collect();
        if cus.is_empty() {
            return;
        }
        let j = cus[self.rng.below(cus.len() as u64) as usize];
        let crash = self.rng.chance(0.5);
        let d = self.rng.range(20_000, 300_000);
        let impaired = self.impaired_cus(j);
        if impaired.is_empty() {
            return;
        }
        let role = self.cu(j).expect("live").role();
        // A candidate's crash is its own kind (`candidate_crash`), so that `--faults` can
        // leave it out.
        if role == Role::Candidate && !self.opts.faults.candidate_crash {
            return;
        }
        let primary_ok = !matches!(role, Role::Primary | Role::Candidate);
        let Some(k) = self.commit_holder(&[j], primary_ok) else {
            return;
        };
        self.report.second_cu_faults += 1;
        let (id, holder) = (self.nodes[j].id, self.nodes[k].id);
        self.trace(|| {
            format!(
                "SECOND CU FAULT: {} {role:?} cu {id} while cu {impaired:?} down, re-joining or cut off; cu {holder} holds every committed op",
                if crash { "crash" } else { "isolate" }
            )
        });
        if crash {
            self.crash(j, d);
        } else {
            self.isolate(j, d);
        }
    }

    /// Crashes the primary (when a single fault may) and plans to crash the candidate that
    /// takes over at one step of its failover.
    fn plan_candidate_crash(&mut self) {
        if self.candidate_plan.is_some() {
            return;
        }
        let step = self.rng.below(3) as usize;
        self.candidate_plan = Some(step);
        self.trace(|| {
            format!(
                "PLAN: crash the next failover's candidate while {}",
                STEPS[step]
            )
        });
        if let Some(p) = self.primary()
            && self.can_crash_cu(p)
        {
            let d = self.rng.range(20_000, 300_000);
            self.crash(p, d);
        }
    }

    /// The step of a failover control unit `i` is at: querying (no channel resolved),
    /// resolving (some resolved), or replaying (primary of the epoch it took over, still
    /// replaying a channel that failover resolved).
    fn failover_step(&self, i: usize) -> Option<usize> {
        let c = self.cu(i)?;
        let channels = self.cfg.topology.channels() as u32;
        let resolved = |ch| c.last_failover(ch).is_some_and(|f| f.epoch == c.epoch());
        match c.role() {
            Role::Candidate => Some(if (0..channels).any(resolved) { 1 } else { 0 }),
            Role::Primary if (0..channels).any(|ch| resolved(ch) && c.is_replaying(ch)) => Some(2),
            _ => None,
        }
    }

    /// Carries out the planned candidate crash once a failover reaches its step, if another
    /// in-sync standby still holds every committed op.
    fn watch_candidate(&mut self) {
        let Some(step) = self.candidate_plan else {
            return;
        };
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_cu || self.failover_step(i) != Some(step) {
                continue;
            }
            let Some(k) = self.commit_holder(&[i], false) else {
                continue;
            };
            self.candidate_plan = None;
            self.report.candidate_crashes[step] += 1;
            let (id, holder) = (self.nodes[i].id, self.nodes[k].id);
            self.trace(|| {
                format!(
                    "CANDIDATE CRASH: cu {id} while {}; cu {holder} holds every committed op",
                    STEPS[step]
                )
            });
            let d = self.rng.range(20_000, 300_000);
            self.crash(i, d);
            return;
        }
    }

    /// At the end of the fault phase: the lying line card is replaced by an honest one (a
    /// fresh client that asks for a full replay), and no candidate crash is pending.
    fn end_extra_faults(&mut self) {
        self.candidate_plan = None;
        if let Some((id, _)) = self.liar {
            let i = self.node_index(id);
            if self.client(i).is_some() {
                self.crash(i, 1_000);
            }
            self.trace(|| format!("LIAR client {id} replaced by an honest line card"));
        }
    }

    fn next_wake(&self, submit_at: Option<u64>, fault_at: Option<u64>, phase_at: u64) -> u64 {
        let mut t = phase_at;
        for x in [self.net.next_at(), submit_at, fault_at]
            .into_iter()
            .flatten()
        {
            t = t.min(x);
        }
        for n in &self.nodes {
            let w = match &n.slot {
                Slot::Up(n) => n.poll_timeout(),
                Slot::Down { restart_at_us } => *restart_at_us,
            };
            t = t.min(w);
        }
        t.max(self.now_us)
    }

    fn run(&mut self) {
        let settle_us = 300_000;
        let quiesce_limit_us = 8_000_000;
        let mut phase = Phase::Faults;
        let mut phase_end = self.opts.fault_phase_us;
        let mut submit_at = Some(self.rng.range(100, 800));
        let mut fault_at = Some(self.rng.range(20_000, 200_000));
        let mut next_check = 0;
        let mut next_bounds_check = 0;
        loop {
            let now = self.next_wake(submit_at, fault_at, phase_end);
            self.now_us = now;
            if now >= phase_end {
                match phase {
                    Phase::Faults => {
                        phase = Phase::Settle;
                        phase_end = now + settle_us;
                        fault_at = None;
                        self.net.profile = NetProfile::clean();
                        self.net.heal_all();
                        self.trace(|| "fault phase over: network healed".into());
                        self.end_extra_faults();
                        for i in 0..self.nodes.len() {
                            if let Slot::Down { restart_at_us } = &mut self.nodes[i].slot {
                                *restart_at_us = (*restart_at_us).min(now + 1_000);
                            }
                        }
                    }
                    Phase::Settle => {
                        phase = Phase::Quiesce;
                        phase_end = now + quiesce_limit_us;
                        submit_at = None;
                        self.trace(|| "submissions stopped: waiting for convergence".into());
                    }
                    Phase::Quiesce => {
                        let why = self.convergence_gap().unwrap_or_default();
                        self.violation(format!(
                            "inv5: no convergence within {quiesce_limit_us}us of quiescence: {why}"
                        ));
                        break;
                    }
                }
                continue;
            }
            while let Some((src, dst, bytes)) = self.net.pop_due(now) {
                let di = self.node_index(dst);
                // A client only adopts epochs from their owners (others are rejected), in
                // frames that pass validation. Only a frame whose header epoch is above what
                // `dst` has seen can raise it, so only such a frame is validated here.
                if let Ok((h, _)) = FrameHeader::read_from_prefix(&bytes) {
                    let epoch = h.epoch.get();
                    if epoch > self.max_epoch_rx[di]
                        && FrameReader::new(&bytes).is_ok()
                        && self.cfg.topology.epoch_owner(epoch) == Some(src)
                    {
                        self.max_epoch_rx[di] = epoch;
                    }
                }
                self.step_node(di, Some(&bytes));
                self.net.recycle(bytes);
            }
            for i in 0..self.nodes.len() {
                let due = match &self.nodes[i].slot {
                    Slot::Up(n) => n.poll_timeout() <= now,
                    Slot::Down { restart_at_us } => *restart_at_us <= now,
                };
                if due {
                    if matches!(self.nodes[i].slot, Slot::Down { .. }) {
                        self.restart(i);
                    } else {
                        self.step_node(i, None);
                    }
                }
            }
            if submit_at.is_some_and(|t| t <= now) {
                self.submit();
                submit_at = Some(now + self.rng.range(100, 1_500));
            }
            if fault_at.is_some_and(|t| t <= now) {
                self.fault();
                fault_at = Some(now + self.rng.range(40_000, 350_000));
            }
            if self.candidate_plan.is_some() {
                self.watch_candidate();
            }
            self.check_single_primary();
            // Rings keep what they allocate, so a periodic look sees every overrun; checking
            // every step would cost a third of the run time.
            if now >= next_bounds_check {
                next_bounds_check = now + 1_000;
                self.check_bounds();
            }
            if phase == Phase::Quiesce && now >= next_check {
                next_check = now + 10_000;
                if self.convergence_gap().is_none() {
                    break;
                }
            }
            if self.report.violations.len() >= 5 {
                break;
            }
        }
        self.report.end_us = self.now_us;
    }
}

/// The steps of a failover at which a candidate crash is planned.
const STEPS: [&str; 3] = ["querying", "resolving", "replaying"];

/// Runs one seed and returns its report.
/// The config of node `id` in its life `boot`: the run's, with a table seed of its own, as
/// separate processes would have (replicas must agree whatever their slot order).
fn node_cfg(cfg: &ProtoConfig, id: NodeId, boot: u32) -> ProtoConfig {
    let mut c = cfg.clone();
    c.table_seed ^= ((u64::from(id) << 32) | u64::from(boot)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    c
}

pub fn run_seed(seed: u64, opts: &SimOptions) -> RunReport {
    let mut rng = SplitMix64::new(seed ^ 0x5eed_5eed_5eed_5eed);
    let mut n_cu = if rng.chance(0.3) { 3 } else { 2 };
    // Second control-unit faults need room: some three-unit draws become four.
    if (opts.faults.second_cu || opts.faults.candidate_crash) && n_cu == 3 && rng.chance(0.5) {
        n_cu = 4;
    }
    let n_clients = rng.range(2, 4) as usize;
    let cus: Vec<NodeId> = (0..n_cu).map(|i| 1 + i as NodeId).collect();
    let clients: Vec<NodeId> = (0..n_clients).map(|i| 100 + i as NodeId).collect();
    let n_channels = rng.range(n_clients as u64, 2 * n_clients as u64) as usize;
    let channel_owner = (0..n_channels).map(|c| clients[c % n_clients]).collect();
    let topology = Topology {
        control_units: cus.clone(),
        clients: clients.clone(),
        channel_owner,
        submitters: vec![],
    };
    let mut cfg = ProtoConfig::new(topology);
    cfg.window_ops = rng.range(16, 256) as usize;
    cfg.heartbeat_interval_us = 10_000;
    cfg.failover_timeout_us = 50_000;
    cfg.drop_timeout_us = 100_000;
    cfg.query_timeout_us = 40_000;
    cfg.rto_us = 15_000;
    cfg.nack_interval_us = cfg.rto_us / 2;
    cfg.tick_us = 2_000;
    cfg.bulk_window = rng.range(4, 64) as u32;
    // The frame trailer grew from a 16-byte tag to 32 bytes (boot nonces added); the frames
    // keep the room for messages they had, so every seed replays as it did before.
    cfg.max_frame_bytes =
        [600, 1472, 9000][rng.below(3) as usize] + crate::wire::TRAILER_BYTES - 16;
    cfg.cut_policy = match rng.below(3) {
        0 => CutPolicy::Complete,
        1 => CutPolicy::Fast,
        _ => CutPolicy::Weighted {
            max_ops: rng.range(1, 8),
        },
    };
    cfg.inject = opts.inject;
    // The tables' slot order decides the order of entries in bulk streams, so it must come
    // from the seed, not from the process, for a seed to replay exactly.
    cfg.table_seed = seed ^ 0x7ab1_e5ee_d000_0000;
    cfg.validate().expect("simulator config is valid");
    let mut profile = NetProfile::draw(&mut rng);
    if opts.faults.delay_spikes {
        profile.spike = rng.unit() * 0.01;
    }
    if opts.faults.corrupt {
        profile.corrupt = rng.unit() * 0.02;
        profile.garbage = rng.unit() * 0.005;
    }
    let liar = if opts.faults.liar && rng.chance(0.3) {
        let id = clients[rng.below(clients.len() as u64) as usize];
        Some(Liar {
            id,
            p: 0.05 + rng.unit() * 0.3,
            lying: true,
        })
    } else {
        None
    };
    let mut nodes = Vec::new();
    for &id in &cus {
        nodes.push(Host {
            id,
            is_cu: true,
            slot: Slot::Up(Node::Cu(Box::new(ControlUnit::new(
                node_cfg(&cfg, id, 0),
                id,
                true,
                0,
                0,
            )))),
            boots: 0,
            persisted_epoch: 0,
            life_floor_epoch: 0,
        });
    }
    for &id in &clients {
        nodes.push(Host {
            id,
            is_cu: false,
            slot: Slot::Up(Node::Client(Box::new(Client::new(
                node_cfg(&cfg, id, 0),
                id,
                false,
                0,
                0,
            )))),
            boots: 0,
            persisted_epoch: 0,
            life_floor_epoch: 0,
        });
    }
    let report = RunReport {
        seed,
        control_units: n_cu,
        clients: n_clients,
        channels: n_channels,
        policy: Some(cfg.cut_policy),
        loss: profile.loss,
        liar: liar.map(|l| l.id),
        ..Default::default()
    };
    let mut net = Net::new(profile);
    net.heartbeat_us = cfg.heartbeat_interval_us;
    net.notes_on = opts.verbose || opts.fingerprint;
    net.liar = liar;
    let liar = liar.map(|l| (l.id, cfg.topology.channels_of(l.id).collect()));
    let n_nodes = nodes.len();
    let mut w = World {
        rng,
        net,
        cfg,
        nodes,
        now_us: 0,
        opts: opts.clone(),
        report,
        trace: VecDeque::new(),
        log: HashMap::default(),
        marks: BTreeMap::new(),
        cuts: HashMap::default(),
        reported_once: HashSet::default(),
        joining_voted: Vec::new(),
        client_track: HashMap::default(),
        standby_track: HashMap::default(),
        acked_hw: vec![Vec::new(); n_channels],
        max_epoch_rx: vec![0; n_nodes],
        resolutions: HashMap::default(),
        client_unknown_us: HashMap::default(),
        failover_resolved: HashSet::default(),
        buf: Vec::new(),
        liar,
        candidate_plan: None,
        trace_fp: 0,
        trace_count: 0,
    };
    let head = format!(
        "seed {seed}: {n_cu} control units, {n_clients} clients, {n_channels} channels, {:?}, window {}, net {:?}",
        w.cfg.cut_policy, w.cfg.window_ops, w.net.profile
    );
    w.trace(|| head);
    if let Some((id, chans)) = &w.liar {
        let (id, chans) = (*id, chans.clone());
        let p = w.net.liar.map_or(0.0, |l| l.p);
        w.trace(|| format!("LIAR client {id} lies about channels {chans:?} (each message with chance {p:.2}) until the fault phase ends"));
    }
    w.run();
    if w.report.violations.is_empty() {
        w.final_checks();
    }
    w.flush_net_notes();
    let c = w.net.counts;
    w.report.spiked_datagrams = c.spiked;
    w.report.truncated_frames = c.truncated;
    w.report.bit_flipped_frames = c.bit_flips;
    w.report.garbage_frames = c.garbage;
    w.report.lies = c.lies;
    if w.opts.fingerprint {
        w.report.fingerprint = Some(w.fingerprint());
    }
    w.report.trace = w.trace.iter().cloned().collect();
    w.report
}
