//! When to send our heartbeat: every keepalive, lined up with the peers' heartbeats.
//!
//! Every packet received is a wakeup of the daemon, and so is every send timer. Two nodes
//! sending on independent timers cost four wakeups per keepalive between them; at a 10 ms
//! keepalive that is most of an idle daemon's CPU. A node therefore answers a heartbeat it
//! is lined up with in the same wakeup in which it arrives: three wakeups per keepalive for
//! the pair, only one of them a timer.
//!
//! That timer wakeup is the dear one: it comes after a keepalive of idleness, with cold
//! caches, and its send pays for the delivery to the peer. So a pair **takes turns**
//! ([`Pacing::TakeTurns`]): the node that answered starts the next exchange a keepalive
//! later, and each node's timer fires every other keepalive. With more live peers, the
//! lowest name paces and the others follow it ([`Pacing::Follow`]).
//!
//! The rules, with `k` = keepalive and `s` = k/8 of slack:
//!
//! * The send timer is the fallback: when it expires we send and re-arm it at +k; a
//!   turn-taker re-arms it as the fallback for the peer's turn (next bullet but one), since
//!   the peer's answer may be read only later.
//! * When a heartbeat we line up with arrives and we have not sent for at least `s`, we
//!   send at once (possibly early: an interval is never stretched by this). A follower
//!   re-arms at +k+s, so the pace setter's next heartbeat normally arrives before its timer;
//!   a turn-taker re-arms at +k, since the next turn is its own.
//! * When it arrives less than `s` after our own send, it is the answer to ours (or crossed
//!   it): we do not send again, and the timer moves to +k+s from the arrival (+k+1.5s for the
//!   higher name of a pair, so two nodes that started together fall into turns). An
//!   interval is never longer than `k + 2s` = 1.25 k.
//!
//! Liveness is unaffected: the peer's deadline still counts from its last heartbeat, and our
//! heartbeats never stop when the peer falls silent (the timer then runs at k+s or k+1.5s
//! while taking turns, k otherwise).

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

    /// The timer fired at `now`: whether to send. `turns` is `Some(our name sorts first)`
    /// when we take turns with one peer ([`Pacing::TakeTurns`]): the next exchange is then
    /// the peer's to start, so the timer is only its fallback (as if the peer's answer had
    /// just arrived: the answer may be read only later). Otherwise it re-arms at
    /// +keepalive, without a burst when we were not scheduled for longer than that.
    pub fn on_timer(&mut self, now: Instant, turns: Option<bool>) -> bool {
        if now < self.next {
            return false;
        }
        self.next = match turns {
            Some(lower) => self.partner_fallback(now, lower),
            None if self.next + self.keepalive <= now => now + self.keepalive,
            None => self.next + self.keepalive,
        };
        self.last_sent = Some(now);
        true
    }

    /// When our timer fires if the partner does not start its turn: a slack after it
    /// should have, half a slack more for the higher name (see the module doc).
    fn partner_fallback(&self, now: Instant, lower: bool) -> Instant {
        let slack = self.slack();
        if lower {
            now + self.keepalive + slack
        } else {
            now + self.keepalive + slack + slack / 2
        }
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
    /// breaks the tie when both started a turn at once: the higher name waits half a slack
    /// longer, so the lower one's next heartbeat arrives first and the turns resume.
    pub fn on_partner_heartbeat(&mut self, now: Instant, lower: bool) -> bool {
        let send = self.answer(now);
        self.next = if send {
            now + self.keepalive
        } else {
            self.partner_fallback(now, lower)
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
    TakeTurns {
        /// The peer.
        partner: &'a str,
        /// Whether our name sorts before the partner's (it breaks ties, see
        /// [`HeartbeatPacer::on_partner_heartbeat`]).
        lower: bool,
    },
    /// Several live peers, all sorting after us: they follow our timer.
    Lead,
}

/// How our heartbeats line up with `peers` (name, alive), `own` being our name.
pub fn pacing<'a, I>(own: &str, peers: I) -> Pacing<'a>
where
    I: IntoIterator<Item = (&'a str, bool)>,
    I::IntoIter: Clone,
{
    let live = peers
        .into_iter()
        .filter(|(_, alive)| *alive)
        .map(|(n, _)| n);
    let mut first_two = live.clone();
    match (first_two.next(), first_two.next()) {
        (None, _) => Pacing::Alone,
        (Some(only), None) => Pacing::TakeTurns {
            partner: only,
            lower: own < only,
        },
        _ => match live.filter(|name| *name < own).min() {
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
        let t0 = crate::clock::now();
        let mut p = HeartbeatPacer::new(t0, K);
        assert!(p.on_timer(t0, None));
        assert_eq!(p.due(), t0 + K);
        assert!(!p.on_timer(t0 + ms(5), None));
        assert!(p.on_timer(t0 + K, None));
        // scheduled 55 ms late: one send, next a keepalive from now
        assert!(p.on_timer(t0 + ms(75), None));
        assert_eq!(p.due(), t0 + ms(85));
    }

    #[test]
    fn follower_locks_onto_the_pace_setter_and_its_timer_stops_firing() {
        let t0 = crate::clock::now();
        let mut p = HeartbeatPacer::new(t0, K);
        assert!(p.on_timer(t0, None));
        // the pace setter's phase is 4 ms after ours; arrivals every 10 ms
        let mut sends = vec![t0];
        let mut timer_sends = 0;
        let mut t = t0 + ms(4);
        let end = t0 + ms(200);
        while t < end {
            // the timer fires first if it is due before the arrival
            while p.due() <= t {
                let at = p.due();
                assert!(p.on_timer(at, None));
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
        let t0 = crate::clock::now();
        let mut p = HeartbeatPacer::new(t0, K);
        assert!(p.on_timer(t0, None));
        // arrival 0.5 ms after our send: no second send, timer moves past the next arrival
        assert!(!p.on_pace_setter_heartbeat(t0 + Duration::from_micros(500)));
        assert_eq!(p.due(), t0 + Duration::from_micros(500) + K + K / 8);
        // the next arrival (10 ms later) comes before the timer: send then
        assert!(p.on_pace_setter_heartbeat(t0 + Duration::from_micros(10_500)));
        // the longest interval was 10.5 ms
    }

    #[test]
    fn silent_pace_setter_falls_back_to_the_timer() {
        let t0 = crate::clock::now();
        let mut p = HeartbeatPacer::new(t0, K);
        assert!(p.on_timer(t0, None));
        assert!(p.on_pace_setter_heartbeat(t0 + ms(4)));
        let due = p.due();
        assert_eq!(due, t0 + ms(4) + K + K / 8);
        assert!(p.on_timer(due, None));
        assert_eq!(p.due(), due + K);
    }

    #[test]
    fn extra_send_restarts_the_interval_and_reload_shortens_it() {
        let t0 = crate::clock::now();
        let mut p = HeartbeatPacer::new(t0, K);
        assert!(p.on_timer(t0, None));
        p.on_extra_send(t0 + ms(3));
        assert_eq!(p.due(), t0 + ms(13));
        p.set_keepalive(ms(5));
        assert_eq!(p.due(), t0 + ms(8));
        // the new keepalive is the interval from then on
        assert!(p.on_timer(t0 + ms(8), None));
        assert_eq!(p.due(), t0 + ms(13));
    }

    /// Two turn-taking pacers joined by a link with one-way `delay`, both started at `start`
    /// offsets; returns each one's sends as (time, by its timer).
    fn take_turns(
        offsets: [Duration; 2],
        delay: Duration,
        until: Duration,
    ) -> [Vec<(Instant, bool)>; 2] {
        let t0 = crate::clock::now();
        let mut pacers = offsets.map(|o| HeartbeatPacer::new(t0 + o, K));
        let mut sends: [Vec<(Instant, bool)>; 2] = [Vec::new(), Vec::new()];
        // frames in flight: (arrival, receiver)
        let mut in_flight: Vec<(Instant, usize)> = Vec::new();
        for _ in 0..10_000 {
            let next_timer = (0..2).min_by_key(|&i| pacers[i].due()).unwrap();
            let timer_at = pacers[next_timer].due();
            in_flight.sort();
            let arrival = in_flight.first().copied();
            let (now, who, by_timer) = match arrival {
                Some((at, to)) if at <= timer_at => {
                    in_flight.remove(0);
                    (at, to, false)
                }
                _ => (timer_at, next_timer, true),
            };
            if now > t0 + until {
                break;
            }
            let send = if by_timer {
                pacers[who].on_timer(now, Some(who == 0))
            } else {
                pacers[who].on_partner_heartbeat(now, who == 0)
            };
            if send {
                sends[who].push((now, by_timer));
                in_flight.push((now + delay, 1 - who));
            }
        }
        sends
    }

    /// `sends` (time, by the timer) of `node` are never more than 1.25 keepalive apart, and
    /// from send `settled` on every other one is by the timer (±1).
    fn assert_in_turns(node: usize, sends: &[(Instant, bool)], settled: usize) {
        for w in sends.windows(2) {
            assert!(
                w[1].0 - w[0].0 <= K + K / 4,
                "node {node}: interval {:?}",
                w[1].0 - w[0].0
            );
        }
        let steady = &sends[settled..];
        let by_timer = steady.iter().filter(|(_, t)| *t).count();
        assert!(
            by_timer.abs_diff(steady.len() / 2) <= 1,
            "node {node}: {by_timer} of {} by timer: {sends:?}",
            steady.len()
        );
    }

    #[test]
    fn a_pair_takes_turns_so_each_timer_fires_every_other_keepalive() {
        let delay = Duration::from_micros(80);
        let sends = take_turns([ms(0), ms(3)], delay, ms(500));
        for (node, s) in sends.iter().enumerate() {
            assert!(s.len() >= 48, "node {node}: {} sends", s.len());
            // after locking on, every other send is by the timer, the others answer
            assert_in_turns(node, s, 4);
        }
    }

    #[test]
    fn a_pair_that_starts_at_the_same_instant_falls_into_turns() {
        // both timers fire together: the answers cross and neither answers the other
        let sends = take_turns([ms(0), ms(0)], Duration::from_micros(50), ms(300));
        for (node, s) in sends.iter().enumerate() {
            assert_in_turns(node, s, 6);
        }
    }

    #[test]
    fn a_silent_partner_leaves_our_timer_within_a_quarter_keepalive_late() {
        let t0 = crate::clock::now();
        let mut p = HeartbeatPacer::new(t0, K);
        assert!(p.on_timer(t0, Some(false)));
        // the partner's turn is next: our timer is only its fallback
        assert_eq!(p.due(), t0 + K + K * 3 / 16);
        // the partner's answer, read later or at once, changes nothing
        assert!(!p.on_partner_heartbeat(t0 + Duration::from_micros(100), false));
        let fallback = p.due();
        assert_eq!(fallback, t0 + Duration::from_micros(100) + K + K * 3 / 16);
        // then nothing: every send by the timer, never more than 1.25 keepalive apart
        let mut last = t0;
        let mut at = fallback;
        for _ in 0..5 {
            assert!(p.on_timer(at, Some(false)));
            assert!(at - last <= K + K / 4 + Duration::from_micros(100));
            last = at;
            at = p.due();
        }
        // alone again (the partner declared dead): every keepalive
        assert!(p.on_timer(at, None));
        assert_eq!(p.due(), at + K);
    }

    #[test]
    fn one_live_peer_takes_turns_several_follow_the_lowest_name() {
        let peers = [("dir1", true), ("dir3", true)];
        assert_eq!(pacing("dir2", peers), Pacing::Follow("dir1"));
        assert_eq!(pacing("dir0", peers), Pacing::Lead);
        assert_eq!(
            pacing("dir2", [("dir1", false), ("dir3", true)]),
            Pacing::TakeTurns {
                partner: "dir3",
                lower: true
            }
        );
        assert_eq!(
            pacing("dir9", [("dir3", true), ("dir1", true)]),
            Pacing::Follow("dir1")
        );
        assert_eq!(pacing("dir2", [("dir1", false)]), Pacing::Alone);
    }
}
