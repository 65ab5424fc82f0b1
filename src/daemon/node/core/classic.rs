//! The node core's side of heartbeat's classic protocol ([`crate::membership::classic`]):
//! what hbd says to and does for a heartbeat 3.0.6 peer.
//!
//! A peer is taken for a heartbeat node when its heartbeats carry no `hbd_groups` field, or
//! when it sends one of heartbeat's own messages. Towards such a peer hbd
//!
//! * answers `reqnodes` with `repnodes`, so heartbeat's communication comes up (its API,
//!   `cl_status`, its resource management);
//! * acknowledges its sequenced frames (`NS_ackmsg`), keeps a history of our own sequenced
//!   frames to answer `NS_rexmit` with the original bytes (or `NS_nak_rexmit`), and asks for
//!   the frames it misses;
//! * runs the haresources resource protocol: what the peer says it holds (`resource`,
//!   `shutdone`, the standby handshake) becomes its group reports for the [`Manager`],
//!   in place of `hbd_groups`; what we hold and whether we are settled goes out as our own
//!   `resource` message whenever it changes; operator moves on either side travel as
//!   `ask_resources`/`hb_takeover`.
//!
//! [`Manager`]: crate::manager::Manager

use tokio::time::Instant;

use super::{Effect, NodeCore};
use crate::config::AutoFailback;
use crate::manager::{Command, GroupClass, GroupReport, Placement};
use crate::membership::classic::delivery::{RexmitAnswer, requested, should_ack};
use crate::membership::classic::message::{Classic, RscHold, StandbyPhase};
use crate::membership::classic::resources::{Standby, in_hold, our_hold};
use crate::membership::seqtrack::SeqVerdict;
use crate::membership::wire::{self, FieldRef, MessageView};

/// heartbeat's per-peer `ack_trigger` (a random 0–9 there; any fixed value does).
const ACK_TRIGGER: u64 = 0;

impl NodeCore {
    /// A status from peer `peer` arrived: it is a heartbeat node when it carries no group
    /// reports while we have groups, or it already said something only heartbeat says.
    pub(super) fn classic_note_status(&mut self, peer: usize, has_reports: bool, active: bool) {
        if !self.config.groups.is_empty()
            && let Some(p) = self.classic.peers.get_mut(peer)
        {
            if !has_reports && !p.classic {
                tracing::info!(
                    node = %self.membership.peers()[peer].name,
                    "the peer is a heartbeat node: speaking heartbeat's resource protocol to it"
                );
                self.classic.start_asked = true;
            }
            p.classic = !has_reports;
            if p.classic
                && active
                && self.config.auto_failback == AutoFailback::Legacy
                && !p.legacy_asked
            {
                p.legacy_asked = true;
                self.classic.legacy_requests = true;
            }
        }
    }

    /// Acknowledges and tracks gaps in a sequenced frame of a heartbeat peer.
    pub(super) fn classic_on_sequenced(
        &mut self,
        now: Instant,
        peer: usize,
        seq: u64,
        verdict: SeqVerdict,
        out: &mut Vec<Effect>,
    ) {
        let Some(p) = self.classic.peers.get_mut(peer) else {
            return;
        };
        match verdict {
            SeqVerdict::Gap { missing } => {
                p.requests.on_gap(seq.saturating_sub(missing)..seq, now);
            }
            SeqVerdict::Late => p.requests.on_arrived(seq),
            SeqVerdict::Restart { .. } | SeqVerdict::Rejoin | SeqVerdict::Resync { .. } => {
                p.requests.clear();
            }
            _ => {}
        }
        if !p.classic {
            return;
        }
        let missing = self.membership.peers()[peer].sequence.missing_count();
        if should_ack(seq, ACK_TRIGGER, missing) {
            let dest = self.membership.peers()[peer].name.clone();
            self.send_classic(now, &Classic::Ack { seq }, &dest, out);
        }
    }

    /// A peer died (`dead`) or restarted: what it held and asked for is gone with its run.
    pub(super) fn classic_on_peer_gone(&mut self, peer: usize, dead: bool) {
        if let Some(p) = self.classic.peers.get_mut(peer) {
            p.requests.clear();
            if dead {
                p.resources.on_released_all();
            } else {
                p.resources.forget();
            }
        }
    }

    /// A peer restarted: after a clean stop (`shutdone`) it counts as returning, so
    /// auto_failback applies as after a death (for a peer that never left this changes
    /// nothing).
    pub(super) fn classic_on_peer_restarted(
        &mut self,
        now: Instant,
        peer: usize,
        out: &mut Vec<Effect>,
    ) {
        self.classic_on_peer_gone(peer, false);
        let name = self.membership.peers()[peer].name.clone();
        let actions = self.manager.on_peer_alive(&name);
        self.run_actions(now, actions, out);
    }

    /// Sends the retransmission requests that are due.
    pub(super) fn classic_on_timer(&mut self, now: Instant, out: &mut Vec<Effect>) {
        for peer in 0..self.classic.peers.len() {
            let due = self.classic.peers[peer].requests.due(now);
            if due.is_empty() {
                continue;
            }
            let dest = self.membership.peers()[peer].name.clone();
            for seq in due {
                let ask = Classic::Rexmit {
                    first: seq,
                    last: seq,
                };
                self.send_classic(now, &ask, &dest, out);
            }
        }
    }

    /// One of heartbeat's messages from `peer`.
    pub(super) fn classic_on_message(
        &mut self,
        now: Instant,
        peer: usize,
        message: &MessageView<'_>,
        out: &mut Vec<Effect>,
    ) {
        let Some(msg) = Classic::read(message) else {
            return;
        };
        let peer_was_classic = self.classic.peers[peer].classic;
        let to_us = message
            .get_str("dest")
            .is_none_or(|d| d == self.identity.name);
        if msg.addressed() && !to_us {
            return;
        }
        let name = self.membership.peers()[peer].name.clone();
        if !peer_was_classic {
            tracing::info!(node = %name, "the peer is a heartbeat node (it sent '{}')", message.msg_type().unwrap_or(""));
            self.classic.peers[peer].classic = true;
            self.classic.start_asked = true;
        }
        let from_pair_peer = self.manager.peer() == Some(name.as_str());
        if matches!(msg, Classic::Ack { .. }) {
            tracing::trace!(node = %name, ?msg, "heartbeat message");
        } else {
            tracing::info!(node = %name, ?msg, "heartbeat message");
        }
        match msg {
            Classic::ReqNodes => {
                let nodes = self.config.nodes.clone();
                self.send_classic(now, &Classic::RepNodes { nodes }, &name, out);
            }
            Classic::Rexmit { first, last } => {
                for seq in requested(first, last) {
                    match self.classic.history.answer(seq, now) {
                        RexmitAnswer::Resend(frame) => out.push(Effect::Send {
                            frame: frame.to_vec(),
                            answer: false,
                        }),
                        RexmitAnswer::TooSoon => {}
                        RexmitAnswer::Gone => {
                            self.send_classic(now, &Classic::NakRexmit { seq }, &name, out);
                        }
                    }
                }
            }
            Classic::NakRexmit { seq } => {
                tracing::warn!(node = %name, seq = %format!("{seq:x}"), "irretrievably lost packet");
                self.classic.peers[peer].requests.on_arrived(seq);
            }
            Classic::Ack { .. } | Classic::RepNodes { .. } => {}
            _ if !from_pair_peer => {}
            Classic::Starting => {
                // It asks what we hold; its run starts afresh.
                self.classic.peers[peer].resources.forget();
                self.classic.asked = true;
            }
            Classic::Resource {
                hold,
                full,
                stable,
                info,
            } => {
                let r = &mut self.classic.peers[peer].resources;
                match info.as_deref() {
                    // Said before the release: what it holds drops when it says done
                    // (`shutdone`, `ask_resources done`), not now.
                    Some("shutdown") | Some("standby") => r.stable = false,
                    _ => r.on_resource(hold, full, stable),
                }
                self.classic_apply_reports(now, peer, out);
            }
            Classic::Shutdone => {
                tracing::info!(node = %name, "received shutdown notice: taking over its groups now");
                self.classic.peers[peer].resources.on_released_all();
                let actions = self.manager.on_peer_shutdown(&name);
                self.run_actions(now, actions, out);
            }
            Classic::AskResources { hold, phase } => {
                self.classic_on_standby(now, peer, hold.mirrored(), phase, out);
            }
            Classic::Takeover { hold } => {
                // `rc.d/hb_takeover`: we go standby for what it wants (mirrored to our view).
                self.classic_give(now, peer, hold.mirrored(), out);
            }
            Classic::IpRequest { group } => {
                // Legacy failback: release the group if held here, then answer.
                let index = self.config.groups.iter().position(|g| g.name() == group);
                let weown = index.is_some_and(|i| self.manager.groups()[i].phase.holds());
                if let Some(i) = index {
                    let class = if self.config.groups[i].preferred == self.identity.name {
                        GroupClass::Local
                    } else {
                        GroupClass::Foreign
                    };
                    if let Ok((_, actions)) = self.manager.on_command(Command::Standby(class)) {
                        self.run_actions(now, actions, out);
                    }
                }
                let resp = Classic::IpRequestResp { group, weown };
                self.send_classic(now, &resp, &name, out);
            }
            Classic::IpRequestResp { .. } => {
                // Legacy: it released (or never held) our group: it holds its own only.
                let r = &mut self.classic.peers[peer].resources;
                r.holds = Some(RscHold::Local);
                r.stable = true;
                self.classic_apply_reports(now, peer, out);
            }
        }
    }

    /// A step of the standby handshake from the peer; `hold` is in our view.
    fn classic_on_standby(
        &mut self,
        now: Instant,
        peer: usize,
        hold: RscHold,
        phase: StandbyPhase,
        out: &mut Vec<Effect>,
    ) {
        let name = self.membership.peers()[peer].name.clone();
        let state = self.classic.peers[peer].resources.standby;
        match (phase, state) {
            (StandbyPhase::Me, _) => {
                // The peer gives `hold` up: we take it (our placement moves here; we start
                // once it says done).
                self.classic.peers[peer].resources.standby = Standby::Taking(hold);
                if let Some(class) = class_of(hold)
                    && let Ok((_, actions)) = self.manager.on_command(Command::Takeover(class))
                {
                    self.run_actions(now, actions, out);
                }
                let other = Classic::AskResources {
                    hold: hold.mirrored(),
                    phase: StandbyPhase::Other,
                };
                self.send_classic(now, &other, &name, out);
            }
            (StandbyPhase::Other, Standby::AskedToGive(h)) => {
                self.classic.peers[peer].resources.standby = Standby::Giving(h);
            }
            (StandbyPhase::Done, Standby::Taking(h)) => {
                // Released there: what it holds is what it last said.
                self.classic.peers[peer].resources.standby = Standby::Acquiring(h);
                let r = &mut self.classic.peers[peer].resources;
                if let Some(held) = r.holds {
                    // Drop what it gave up (its view is the mirror of ours).
                    let gave = h.mirrored();
                    r.holds = Some(RscHold::from_flags(
                        held.local() && !gave.local(),
                        held.foreign() && !gave.foreign(),
                    ));
                }
                r.stable = true;
                self.classic_apply_reports(now, peer, out);
            }
            (StandbyPhase::Done, _) => {
                // Its acquisition after our release is done: the handshake is over.
                self.classic.peers[peer].resources.standby = Standby::Idle;
            }
            _ => {}
        }
    }

    /// We go standby for `hold` (our view) towards `peer`: the manager releases the groups
    /// and the handshake tells heartbeat to take them.
    fn classic_give(&mut self, now: Instant, peer: usize, hold: RscHold, out: &mut Vec<Effect>) {
        if let Some(class) = class_of(hold)
            && let Ok((_, actions)) = self.manager.on_command(Command::Standby(class))
        {
            self.run_actions(now, actions, out);
        }
        self.classic_ask_to_give(now, peer, hold, out);
    }

    /// Sends `ask_resources info=me` for `hold` (our view).
    fn classic_ask_to_give(
        &mut self,
        now: Instant,
        peer: usize,
        hold: RscHold,
        out: &mut Vec<Effect>,
    ) {
        let name = self.membership.peers()[peer].name.clone();
        self.classic.peers[peer].resources.standby = Standby::AskedToGive(hold);
        let me = Classic::AskResources {
            hold,
            phase: StandbyPhase::Me,
        };
        self.send_classic(now, &me, &name, out);
    }

    /// An operator's command on this node, already applied by the manager: a heartbeat peer
    /// hears of it in its own words.
    pub(super) fn classic_on_command(
        &mut self,
        now: Instant,
        command: Command,
        out: &mut Vec<Effect>,
    ) {
        let Some(peer) = self.classic_pair_peer() else {
            return;
        };
        match command {
            Command::Standby(class) => {
                self.classic_ask_to_give(now, peer, hold_of(class), out);
            }
            Command::Takeover(class) => {
                let name = self.membership.peers()[peer].name.clone();
                let takeover = Classic::Takeover {
                    hold: hold_of(class),
                };
                self.send_classic(now, &takeover, &name, out);
            }
        }
    }

    /// We stop: tell a heartbeat peer before releasing (`hb_giveup_resources`).
    pub(super) fn classic_on_shutdown(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if self.classic_pair_peer().is_none() || self.classic.stopping {
            return;
        }
        self.classic.stopping = true;
        let msg = Classic::Resource {
            hold: RscHold::None,
            full: true,
            stable: Some(false),
            info: Some("shutdown".into()),
        };
        self.send_classic(now, &msg, "", out);
    }

    /// Every group released as we stop: `shutdone`, so the peer takes over at once.
    pub(super) fn classic_on_stopped(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if self.classic.stopping {
            self.send_classic(now, &Classic::Shutdone, "", out);
        }
    }

    /// After every input: our `resource` message when what we hold or our settledness
    /// changed (or a `starting` asked), and the standby handshake's next step.
    pub(super) fn classic_sync(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let Some(peer) = self.classic_pair_peer() else {
            return;
        };
        if self.classic.stopping || !self.membership.peers()[peer].state.is_alive() {
            return;
        }
        if std::mem::take(&mut self.classic.start_asked) {
            // As heartbeat at communication up (`send_local_starting`): what the peer holds
            // is what it answers from now on.
            self.classic.peers[peer].resources.forget();
            if self.config.auto_failback == AutoFailback::Legacy {
                // Legacy heartbeat sends no `resource` messages: it may hold anything until
                // it answers our `ip-request`s.
                let r = &mut self.classic.peers[peer].resources;
                r.holds = Some(RscHold::All);
                r.stable = true;
                self.classic_apply_reports(now, peer, out);
            } else {
                self.send_classic(now, &Classic::Starting, "", out);
            }
        }
        if std::mem::take(&mut self.classic.legacy_requests) {
            let me = self.identity.name.clone();
            let ours: Vec<String> = self
                .config
                .groups
                .iter()
                .filter(|g| g.preferred == me)
                .map(|g| g.name().to_string())
                .collect();
            for group in ours {
                self.send_classic(now, &Classic::IpRequest { group }, "", out);
            }
        }
        let me = self.identity.name.clone();
        let groups = self.manager.groups();
        let hold = our_hold(groups.iter().map(|g| (g.preferred == me, g.phase.holds())));
        let settled = !groups.iter().any(|g| g.phase.in_transition());
        let name = self.membership.peers()[peer].name.clone();
        match self.classic.peers[peer].resources.standby {
            Standby::Giving(h) if settled && our_hold_within(groups, &me, h).is_none() => {
                // Released: say what we hold, then done (`go_standby`).
                self.classic.peers[peer].resources.standby = Standby::Idle;
                self.classic_send_resources(now, hold, false, Some("standby"), out);
                let done = Classic::AskResources {
                    hold: h,
                    phase: StandbyPhase::Done,
                };
                self.send_classic(now, &done, &name, out);
            }
            Standby::Acquiring(h) if settled => {
                // Acquired what is ours to take: done, and what we hold now.
                self.classic.peers[peer].resources.standby = Standby::Idle;
                let done = Classic::AskResources {
                    hold: h.mirrored(),
                    phase: StandbyPhase::Done,
                };
                self.send_classic(now, &done, &name, out);
                self.classic_send_resources(now, hold, true, None, out);
            }
            _ => {}
        }
        if self.classic.asked || self.classic.said != Some((hold, settled)) {
            self.classic.asked = false;
            self.classic_send_resources(now, hold, settled, None, out);
        }
    }

    fn classic_send_resources(
        &mut self,
        now: Instant,
        hold: RscHold,
        stable: bool,
        info: Option<&str>,
        out: &mut Vec<Effect>,
    ) {
        self.classic.said = Some((hold, stable));
        let msg = Classic::Resource {
            hold,
            full: true,
            stable: Some(stable),
            info: info.map(str::to_string),
        };
        self.send_classic(now, &msg, "", out);
    }

    /// The heartbeat peer's holdings as group reports for the manager.
    fn classic_apply_reports(&mut self, now: Instant, peer: usize, out: &mut Vec<Effect>) {
        let resources = self.classic.peers[peer].resources.clone();
        if resources.holds.is_none() {
            return;
        }
        let name = self.membership.peers()[peer].name.clone();
        let legacy = self.config.auto_failback == AutoFailback::Legacy;
        let reports: Vec<GroupReport> = self
            .manager
            .groups()
            .iter()
            .map(|g| {
                let peer_preferred = g.preferred == name;
                // A peer in flux may be taking any group ("take unclaimed resources only when
                // the other side is stable", hb_resource.c).
                let mut holds =
                    resources.holds_group(peer_preferred).unwrap_or(false) || !resources.stable;
                if let Standby::Taking(h) = resources.standby
                    && in_hold(h, !peer_preferred)
                {
                    // Still releasing until it says done.
                    holds = true;
                }
                // Legacy: each node owns its preferred groups; nothing drifts.
                let placement = if holds
                    && !legacy
                    && !g.phase.holds()
                    && resources.standby == Standby::Idle
                    && resources.stable
                    && g.placement.target != name
                {
                    // It holds the group and is settled: that is where the group is.
                    Placement {
                        target: name.clone(),
                        epoch: g.placement.epoch + 1,
                    }
                } else {
                    g.placement.clone()
                };
                GroupReport {
                    group: g.name.clone(),
                    holds,
                    failed: false,
                    placement,
                }
            })
            .collect();
        let actions = self.manager.on_peer_reports(&reports);
        self.run_actions(now, actions, out);
    }

    /// The pair peer's index when it is a heartbeat node.
    fn classic_pair_peer(&self) -> Option<usize> {
        let name = self.manager.peer()?;
        let index = self
            .membership
            .peers()
            .iter()
            .position(|p| p.name == name)?;
        self.classic.peers[index].classic.then_some(index)
    }

    /// Sends one classic message to `dest` (empty: to all); sequenced types get our next
    /// seq and are kept for retransmission.
    fn send_classic(&mut self, now: Instant, msg: &Classic, dest: &str, out: &mut Vec<Effect>) {
        let owned = msg.fields(dest);
        let fields: Vec<FieldRef<'_>> = owned
            .iter()
            .filter(|(n, _)| *n != "dest" || !dest.is_empty())
            .map(|(n, v)| FieldRef::string(n, v.as_bytes()))
            .collect();
        let sequenced = !owned
            .iter()
            .any(|(n, v)| *n == "t" && wire::is_unsequenced(v));
        let seq = sequenced.then(|| {
            let s = self.next_seq;
            self.next_seq += 1;
            s
        });
        let env = super::envelope(
            &self.config,
            &self.identity,
            self.load.as_deref(),
            self.wall,
            seq,
            now,
        );
        let mut frame = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(1024));
        wire::encode_stamped(
            &mut frame,
            &fields,
            &env,
            self.membership.keys(),
            self.config.msgfmt,
        );
        if let Some(s) = seq {
            self.classic.record(s, &frame);
        }
        out.push(Effect::Send {
            frame,
            answer: false,
        });
    }
}

/// The groups of `hold` (our view) we still hold, if any.
fn our_hold_within(groups: &[crate::manager::GroupState], me: &str, hold: RscHold) -> Option<()> {
    groups
        .iter()
        .any(|g| g.phase.holds() && in_hold(hold, g.preferred == me))
        .then_some(())
}

/// The operator's class for a set of groups (our view).
fn class_of(hold: RscHold) -> Option<GroupClass> {
    match hold {
        RscHold::None => None,
        RscHold::Local => Some(GroupClass::Local),
        RscHold::Foreign => Some(GroupClass::Foreign),
        RscHold::All => Some(GroupClass::All),
    }
}

/// The set of groups an operator's class names (our view).
fn hold_of(class: GroupClass) -> RscHold {
    match class {
        GroupClass::All => RscHold::All,
        GroupClass::Local => RscHold::Local,
        GroupClass::Foreign => RscHold::Foreign,
    }
}
