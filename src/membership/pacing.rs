//! When to send our heartbeat: every keepalive, phase-locked to a pace-setting peer.
//!
//! Every packet received is a wakeup of the daemon, and so is every send timer. Two nodes
//! sending on independent timers cost four wakeups per keepalive between them; at a 10 ms
//! keepalive that is most of an idle daemon's CPU. A node that is not the pace setter
//! therefore sends its heartbeat in the same wakeup in which the pace setter's heartbeat
//! arrives, so the pair costs three wakeups per keepalive.
//!
//! The rules, with `k` = keepalive and `s` = k/8 of slack:
//!
//! * The send timer is the fallback: when it expires we send and re-arm it at +k.
//! * When the pace setter's heartbeat arrives and we have not sent for at least `s`, we send
//!   at once (possibly early: an interval is never stretched by this) and re-arm the timer at
//!   +k+s, so the pace setter's next heartbeat normally arrives before it.
//! * When it arrives less than `s` after our own send (our timer won the race by a hair),
//!   we do not send again; the timer moves to +k+s from the arrival, so the next arrival
//!   wins. Worst case an interval is `k + 2s` = 1.25 k, once, while locking on.
//!
//! Liveness is unaffected: the peer's deadline still counts from its last heartbeat, and our
//! heartbeats never stop when the pace setter falls silent (the timer then runs at k).
//!
//! The pace setter is the live peer with the lowest name when that name sorts before ours
//! (see [`pace_setter`]); the lowest-named node paces itself on its timer.

use std::time::Duration;

use tokio::time::Instant;

/// Our heartbeat schedule: plain data, driven by the node's timer and arrivals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatPacer {
    keepalive: Duration,
    next: Instant,
    last_sent: Option<Instant>,
}

impl HeartbeatPacer {
    /// A schedule whose first heartbeat is due at `now`.
    pub fn new(now: Instant, keepalive: Duration) -> HeartbeatPacer {
        HeartbeatPacer {
            keepalive,
            next: now,
            last_sent: None,
        }
    }

    /// When the timer must fire next.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// A new keepalive (reload): applies from the next send.
    pub fn set_keepalive(&mut self, keepalive: Duration) {
        self.keepalive = keepalive;
        let bound = self.last_sent.map(|t| t + keepalive);
        if let Some(b) = bound
            && b < self.next
        {
            self.next = b;
        }
    }

    fn slack(&self) -> Duration {
        self.keepalive / 8
    }

    /// The timer fired at `now`: whether to send. Re-arms at +keepalive, without a burst
    /// when we were not scheduled for longer than that.
    pub fn on_timer(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next += self.keepalive;
        if self.next <= now {
            self.next = now + self.keepalive;
        }
        self.last_sent = Some(now);
        true
    }

    /// A fresh heartbeat of the pace setter arrived at `now`: whether to send now.
    pub fn on_pace_setter_heartbeat(&mut self, now: Instant) -> bool {
        let slack = self.slack();
        let send = self.answer(now);
        self.next = now + self.keepalive + slack;
        send
    }

    /// A fresh heartbeat of our turn-taking partner arrived at `now` (a pair, see
    /// [`Pacing::TakeTurns`]): whether to send now. When we answer, the next heartbeat is
    /// ours to start, a keepalive later; when it was the answer to ours (or crossed it), the
    /// timer is only the fallback for the partner's turn. `lower` (our name sorts first)
    /// breaks the tie when both started a turn at once: the higher name waits one slack
    /// longer, so the lower one's next heartbeat arrives first and the turns resume.
    pub fn on_partner_heartbeat(&mut self, now: Instant, lower: bool) -> bool {
        let slack = self.slack();
        let send = self.answer(now);
        self.next = if send {
            now + self.keepalive
        } else if lower {
            now + self.keepalive + slack
        } else {
            now + self.keepalive + slack + slack
        };
        send
    }

    /// Whether a heartbeat arriving at `now` is answered: not when ours left less than a
    /// slack ago (it is the answer to ours, or crossed it).
    fn answer(&mut self, now: Instant) -> bool {
        let slack = self.slack();
        let send = self
            .last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= slack);
        if send {
            self.last_sent = Some(now);
        }
        send
    }

    /// We sent a status for another reason (an announcement) at `now`: it counts as the
    /// heartbeat, so the timer restarts from it.
    pub fn on_extra_send(&mut self, now: Instant) {
        self.last_sent = Some(now);
        self.next = now + self.keepalive;
    }
}

/// How our heartbeats line up with the live peers'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing<'a> {
    /// Nobody to line up with: our timer alone.
    Alone,
    /// We follow this peer's heartbeats (several live peers: the lowest name paces).
    Follow(&'a str),
    /// One live peer: we take turns starting the exchange with it, so each node's timer
    /// fires every other keepalive and the pair shares the cost of the first wakeup.
    TakeTurns(&'a str),
    /// Several live peers, all sorting after us: they follow our timer.
    Lead,
}

/// How our heartbeats line up with `peers` (name, alive), `own` being our name.
pub fn pacing<'a>(own: &str, peers: impl IntoIterator<Item = (&'a str, bool)>) -> Pacing<'a> {
    let live: Vec<&'a str> = peers
        .into_iter()
        .filter(|(_, alive)| *alive)
        .map(|(name, _)| name)
        .collect();
    match live.as_slice() {
        [] => Pacing::Alone,
        [only] => Pacing::TakeTurns(only),
        _ => match live.iter().copied().filter(|name| *name < own).min() {
            Some(lowest) => Pacing::Follow(lowest),
            None => Pacing::Lead,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: Duration = Duration::from_millis(10);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn timer_alone_sends_every_keepalive_without_bursts() {
        let t0 = Instant::now();
        let mut p = HeartbeatPacer::new(t0, K);
        assert!(p.on_timer(t0));
        assert_eq!(p.due(), t0 + K);
        assert!(!p.on_timer(t0 + ms(5)));
        assert!(p.on_timer(t0 + K));
        // scheduled 55 ms late: one send, next a keepalive from now
        assert!(p.on_timer(t0 + ms(75)));
        assert_eq!(p.due(), t0 + ms(85));
    }

    #[test]
    fn follower_locks_onto_the_pace_setter_and_its_timer_stops_firing() {
        let t0 = Instant::now();
        let mut p = HeartbeatPacer::new(t0, K);
        assert!(p.on_timer(t0));
        // the pace setter's phase is 4 ms after ours; arrivals every 10 ms
        let mut sends = vec![t0];
        let mut timer_sends = 0;
        let mut t = t0 + ms(4);
        let end = t0 + ms(200);
        while t < end {
            // the timer fires first if it is due before the arrival
            while p.due() <= t {
                let at = p.due();
                assert!(p.on_timer(at));
                sends.push(at);
                timer_sends += 1;
            }
            if p.on_pace_setter_heartbeat(t) {
                sends.push(t);
            }
            t += K;
        }
        // locked on at the first arrival: no timer sends after that
        assert_eq!(timer_sends, 0, "{sends:?}");
        for w in sends.windows(2) {
            assert!(w[1] - w[0] <= K + K / 4, "interval {:?}", w[1] - w[0]);
        }
        assert_eq!(sends.len(), 21);
    }

    #[test]
    fn an_arrival_just_after_our_timer_send_moves_the_timer_instead_of_sending_twice() {
        let t0 = Instant::now();
        let mut p = HeartbeatPacer::new(t0, K);
        assert!(p.on_timer(t0));
        // arrival 0.5 ms after our send: no second send, timer moves past the next arrival
        assert!(!p.on_pace_setter_heartbeat(t0 + Duration::from_micros(500)));
        assert_eq!(p.due(), t0 + Duration::from_micros(500) + K + K / 8);
        // the next arrival (10 ms later) comes before the timer: send then
        assert!(p.on_pace_setter_heartbeat(t0 + Duration::from_micros(10_500)));
        // the longest interval was 10.5 ms
    }

    #[test]
    fn silent_pace_setter_falls_back_to_the_timer() {
        let t0 = Instant::now();
        let mut p = HeartbeatPacer::new(t0, K);
        assert!(p.on_timer(t0));
        assert!(p.on_pace_setter_heartbeat(t0 + ms(4)));
        let due = p.due();
        assert_eq!(due, t0 + ms(4) + K + K / 8);
        assert!(p.on_timer(due));
        assert_eq!(p.due(), due + K);
    }

    #[test]
    fn extra_send_restarts_the_interval_and_reload_shortens_it() {
        let t0 = Instant::now();
        let mut p = HeartbeatPacer::new(t0, K);
        assert!(p.on_timer(t0));
        p.on_extra_send(t0 + ms(3));
        assert_eq!(p.due(), t0 + ms(13));
        p.set_keepalive(ms(5));
        assert_eq!(p.due(), t0 + ms(8));
        // the new keepalive is the interval from then on
        assert!(p.on_timer(t0 + ms(8)));
        assert_eq!(p.due(), t0 + ms(13));
    }

    #[test]
    fn one_live_peer_takes_turns_several_follow_the_lowest_name() {
        let peers = [("dir1", true), ("dir3", true)];
        assert_eq!(pacing("dir2", peers), Pacing::Follow("dir1"));
        assert_eq!(pacing("dir0", peers), Pacing::Lead);
        assert_eq!(
            pacing("dir2", [("dir1", false), ("dir3", true)]),
            Pacing::TakeTurns("dir3")
        );
        assert_eq!(
            pacing("dir9", [("dir3", true), ("dir1", true)]),
            Pacing::Follow("dir1")
        );
        assert_eq!(pacing("dir2", [("dir1", false)]), Pacing::Alone);
    }
}
