//! The haresources resource protocol's state towards one heartbeat peer
//! (`hb_resource.c`: `process_resources`, `ask_for_resources`, `hb_giveup_resources`), as
//! plain data. The node core reads it to tell the manager what the peer holds, in place of
//! the `hbd_groups` reports an hbd peer sends.

use crate::membership::classic::message::RscHold;

/// What a heartbeat peer told us about its groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerResources {
    /// What it holds, from its point of view; `None` until its first `resource` message.
    pub holds: Option<RscHold>,
    /// Whether it says its resource transition is over (`isstable=1`).
    pub stable: bool,
    /// Our side of a standby handshake with it.
    pub standby: Standby,
}

/// Our side of heartbeat's three-phase standby (`ask_resources` me → other → done).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Standby {
    /// No handshake.
    #[default]
    Idle,
    /// We give `hold` (our view) up: `me` sent, waiting for the peer's `other`.
    AskedToGive(RscHold),
    /// The peer said `other`: we release `hold`, then say `done`.
    Giving(RscHold),
    /// The peer gives `hold` (our view) up: we said `other`, waiting for its `done`.
    Taking(RscHold),
    /// The peer said `done`: we acquire `hold`, then say `done`.
    Acquiring(RscHold),
}

impl PeerResources {
    /// Whether the peer holds a group whose preferred node is the peer (`peer_is_preferred`)
    /// or us; `None` while it has said nothing.
    pub fn holds_group(&self, peer_is_preferred: bool) -> Option<bool> {
        self.holds.map(|h| {
            if peer_is_preferred {
                h.local()
            } else {
                h.foreign()
            }
        })
    }

    /// A `resource` message from the peer.
    pub fn on_resource(&mut self, hold: RscHold, full: bool, stable: Option<bool>) {
        self.holds = Some(self.holds.unwrap_or(RscHold::None).update(full, hold));
        if let Some(s) = stable {
            self.stable = s;
        }
    }

    /// The peer released everything (`shutdone`) or died.
    pub fn on_released_all(&mut self) {
        self.holds = Some(RscHold::None);
        self.stable = true;
        self.standby = Standby::Idle;
    }

    /// The peer restarted or returned: it has said nothing yet in its new run.
    pub fn forget(&mut self) {
        *self = PeerResources::default();
    }
}

/// What we hold, from our point of view, out of `(we are preferred, we hold)` per group.
pub fn our_hold(groups: impl IntoIterator<Item = (bool, bool)>) -> RscHold {
    let (mut local, mut foreign) = (false, false);
    for (mine, holds) in groups {
        if holds {
            if mine {
                local = true;
            } else {
                foreign = true;
            }
        }
    }
    RscHold::from_flags(local, foreign)
}

/// Whether a group is in `hold` (our view): `mine` says we are its preferred node.
pub fn in_hold(hold: RscHold, mine: bool) -> bool {
    if mine { hold.local() } else { hold.foreign() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peers_hold_names_groups_from_its_point_of_view() {
        let mut p = PeerResources::default();
        assert_eq!(p.holds_group(true), None);
        p.on_resource(RscHold::Local, true, Some(true));
        assert_eq!(p.holds_group(true), Some(true));
        assert_eq!(p.holds_group(false), Some(false));
        p.on_resource(RscHold::Foreign, false, None);
        assert_eq!(p.holds, Some(RscHold::All));
        assert!(p.stable);
        p.on_released_all();
        assert_eq!(p.holds_group(true), Some(false));
    }

    #[test]
    fn our_hold_is_local_for_our_groups_and_foreign_for_the_peers() {
        assert_eq!(our_hold([(true, true), (false, false)]), RscHold::Local);
        assert_eq!(our_hold([(true, false), (false, true)]), RscHold::Foreign);
        assert_eq!(our_hold([(true, true), (false, true)]), RscHold::All);
        assert_eq!(our_hold([]), RscHold::None);
        assert!(in_hold(RscHold::Foreign, false) && !in_hold(RscHold::Foreign, true));
    }
}
