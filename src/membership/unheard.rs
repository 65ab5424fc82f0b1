//! One-way loss seen from the side that still hears: the peer says, in its heartbeats,
//! which nodes it holds dead ([`DEAD_NODES_FIELD`]). A node that hears its peer name it
//! dead, for longer than an answer needs to get through, knows its own frames are lost on
//! the way: the peer has taken its groups over and cannot learn that this node holds them
//! too. Only this side can end that split brain, so it releases ([`Unheard`] tells when).
//!
//! heartbeat has no such field: a heartbeat 3.0.6 peer ignores it (as it ignores
//! `hbd_groups`) and never sends it, so nothing changes towards heartbeat peers.

use std::time::Duration;

use tokio::time::Instant;

/// Field of our `status` naming the peers we hold dead, space-separated; only sent while
/// there is one.
pub const DEAD_NODES_FIELD: &str = "hbd_dead";

/// Encodes [`DEAD_NODES_FIELD`] for the nodes held dead.
pub fn encode_dead_nodes<'a>(dead: impl Iterator<Item = &'a str>) -> String {
    dead.collect::<Vec<_>>().join(" ")
}

/// Whether `text` ([`DEAD_NODES_FIELD`]) names `node`.
pub fn names(text: &str, node: &str) -> bool {
    text.split(' ').any(|n| n == node)
}

/// How long the peer may name us dead before we conclude it does not hear us: two
/// keepalives. A peer back from a partition names us dead in its first frames until our
/// answer (sent at once) reaches it; two keepalives leave room for that answer and one
/// more heartbeat to be lost.
pub fn patience(keepalive: Duration) -> Duration {
    2 * keepalive
}

/// Whether the peer hears us, from the fresh statuses it sends: a pure state machine
/// (one per pair peer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unheard {
    /// Since when every fresh status of the peer named us dead.
    named_since: Option<Instant>,
    /// Whether we concluded that it does not hear us.
    unheard: bool,
}

/// What a status changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The peer has named us dead for the patience: it does not hear us.
    Unheard,
    /// It no longer names us dead: it hears us again.
    Heard,
}

impl Unheard {
    /// A fresh status of the peer arrived at `now`; `named`: it names us dead.
    pub fn on_status(&mut self, now: Instant, named: bool, patience: Duration) -> Option<Change> {
        if !named {
            self.named_since = None;
            return std::mem::take(&mut self.unheard).then_some(Change::Heard);
        }
        let since = *self.named_since.get_or_insert(now);
        if !self.unheard && now.saturating_duration_since(since) >= patience {
            self.unheard = true;
            return Some(Change::Unheard);
        }
        None
    }

    /// The peer died or stopped: it hears nobody, and a new run starts afresh.
    pub fn reset(&mut self) {
        *self = Unheard::default();
    }

    /// Whether we concluded that the peer does not hear us.
    pub fn is_unheard(&self) -> bool {
        self.unheard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_field_names_each_dead_node() {
        let text = encode_dead_nodes(["dir1", "dir3"].into_iter());
        assert_eq!(text, "dir1 dir3");
        assert!(names(&text, "dir1") && names(&text, "dir3"));
        assert!(!names(&text, "dir") && !names(&text, "dir2") && !names("", "dir1"));
    }

    #[test]
    fn a_peer_that_names_us_dead_for_the_patience_does_not_hear_us() {
        let t0 = crate::clock::now();
        let mut u = Unheard::default();
        let p = patience(ms(100));
        assert_eq!(u.on_status(t0, true, p), None);
        assert_eq!(u.on_status(t0 + ms(100), true, p), None);
        assert_eq!(u.on_status(t0 + ms(200), true, p), Some(Change::Unheard));
        assert!(u.is_unheard());
        // Said once, not at every status.
        assert_eq!(u.on_status(t0 + ms(300), true, p), None);
        assert_eq!(u.on_status(t0 + ms(400), false, p), Some(Change::Heard));
        assert!(!u.is_unheard());
        assert_eq!(u.on_status(t0 + ms(500), false, p), None);
    }

    #[test]
    fn a_peer_back_from_a_partition_that_hears_our_answer_is_not_unheard() {
        // Its first frames after the heal name us dead; our answer reaches it at once.
        let t0 = crate::clock::now();
        let mut u = Unheard::default();
        let p = patience(ms(100));
        assert_eq!(u.on_status(t0, true, p), None);
        assert_eq!(u.on_status(t0 + ms(1), false, p), None);
        // A later death of ours in its eyes starts the count again.
        assert_eq!(u.on_status(t0 + ms(500), true, p), None);
        assert_eq!(u.on_status(t0 + ms(650), true, p), None);
        u.reset();
        assert_eq!(u.on_status(t0 + ms(700), true, p), None);
        assert_eq!(u.on_status(t0 + ms(900), true, p), Some(Change::Unheard));
    }
}
