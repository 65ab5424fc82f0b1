//! heartbeat's classic messages as typed data (HEARTBEAT-WIRE.md §6.1–§6.3).
//!
//! [`Classic::read`] turns an accepted message into one of them (the envelope is read
//! elsewhere); [`Classic::fields`] writes one in heartbeat's field order, for the envelope
//! to be added by [`crate::membership::wire::encode_stamped`].

use crate::membership::wire::{FieldList, parse_hex_u64};

/// heartbeat's `rsc_hold` values (`rsc_msg[]` in `hb_resource.c`), always from the sender's
/// point of view: `local` are the groups haresources gives the sender, `foreign` the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RscHold {
    /// `none`.
    None,
    /// `local`: the sender's own groups.
    Local,
    /// `foreign`: the other node's groups.
    Foreign,
    /// `all`.
    All,
}

impl RscHold {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RscHold::None => "none",
            RscHold::Local => "local",
            RscHold::Foreign => "foreign",
            RscHold::All => "all",
        }
    }

    /// The value for a word; heartbeat's `encode_resources` reads an unknown word as `none`.
    pub fn parse(word: &str) -> RscHold {
        match word {
            "local" => RscHold::Local,
            "foreign" => RscHold::Foreign,
            "all" => RscHold::All,
            _ => RscHold::None,
        }
    }

    /// From two flags: the sender's own groups, the other node's groups.
    pub fn from_flags(local: bool, foreign: bool) -> RscHold {
        match (local, foreign) {
            (false, false) => RscHold::None,
            (true, false) => RscHold::Local,
            (false, true) => RscHold::Foreign,
            (true, true) => RscHold::All,
        }
    }

    /// Whether the set covers the sender's own groups.
    pub fn local(self) -> bool {
        matches!(self, RscHold::Local | RscHold::All)
    }

    /// Whether the set covers the other node's groups.
    pub fn foreign(self) -> bool {
        matches!(self, RscHold::Foreign | RscHold::All)
    }

    /// The same groups seen from the other node (`local` ↔ `foreign`), as `rc.d/hb_takeover`
    /// maps them.
    pub fn mirrored(self) -> RscHold {
        RscHold::from_flags(self.foreign(), self.local())
    }

    /// heartbeat's `HB_UPD_RSC`: a full update replaces, a partial one adds (and `none`
    /// clears).
    pub fn update(self, full: bool, new: RscHold) -> RscHold {
        if full || new == RscHold::None {
            new
        } else {
            RscHold::from_flags(self.local() || new.local(), self.foreign() || new.foreign())
        }
    }
}

/// The standby handshake's phases (`ask_resources info=`, `send_standby_msg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandbyPhase {
    /// `me`: the sender wants to give the groups up.
    Me,
    /// `other`: the sender will take them.
    Other,
    /// `done`: the sender has released (giver) or acquired (taker) them.
    Done,
}

impl StandbyPhase {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            StandbyPhase::Me => "me",
            StandbyPhase::Other => "other",
            StandbyPhase::Done => "done",
        }
    }
}

/// One classic message (the envelope aside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classic {
    /// `reqnodes`: the sender's communication comes up once this is answered.
    ReqNodes,
    /// `repnodes`: the configured node list (each name followed by a space).
    RepNodes {
        /// `nodelist`.
        nodes: Vec<String>,
    },
    /// `NS_ackmsg ackseq=<hex>`: the sender has every frame of ours up to `seq`.
    Ack {
        /// `ackseq`.
        seq: u64,
    },
    /// `NS_rexmit firstseq lastseq` (decimal): resend these frames.
    Rexmit {
        /// `firstseq`.
        first: u64,
        /// `lastseq`.
        last: u64,
    },
    /// `NS_nak_rexmit firstseq=<hex>`: the frame is gone for good.
    NakRexmit {
        /// `firstseq`.
        seq: u64,
    },
    /// `starting`: the sender's resource management starts and asks what we hold.
    Starting,
    /// `resource rsc_hold rtype isstable [info]`: what the sender holds.
    Resource {
        /// `rsc_hold`.
        hold: RscHold,
        /// `rtype=full`: replaces (else adds to) what was known.
        full: bool,
        /// `isstable`, absent in messages from scripts (`mach_down`, standby).
        stable: Option<bool>,
        /// `info`, e.g. `shutdown`, `mach_down`, `standby`.
        info: Option<String>,
    },
    /// `ask_resources rsc_hold info`: a standby handshake step.
    AskResources {
        /// `rsc_hold` (`all` when absent).
        hold: RscHold,
        /// `info`.
        phase: StandbyPhase,
    },
    /// `hb_takeover rsc_hold`: the sender wants these groups (we go standby for them).
    Takeover {
        /// `rsc_hold`, from the sender's view.
        hold: RscHold,
    },
    /// `ip-request ipaddr`: legacy failback asks the holder to release a group.
    IpRequest {
        /// The group key (first resource of the haresources line).
        group: String,
    },
    /// `ip-request-resp ipaddr weown ok`: the group is released (or was not held).
    IpRequestResp {
        /// The group key.
        group: String,
        /// Whether the answerer held it.
        weown: bool,
    },
    /// `shutdone st=dead`: the sender released everything and stops.
    Shutdone,
}

impl Classic {
    /// Reads a classic message; `None` for `status` and anything else (or malformed).
    pub fn read<L: FieldList + ?Sized>(msg: &L) -> Option<Classic> {
        let text = |name: &str| msg.value_of(name).and_then(|v| std::str::from_utf8(v).ok());
        let decimal = |name: &str| text(name).and_then(|v| v.trim().parse::<u64>().ok());
        let hex = |name: &str| msg.value_of(name).and_then(parse_hex_u64);
        Some(match text("t")? {
            "reqnodes" => Classic::ReqNodes,
            "repnodes" => Classic::RepNodes {
                nodes: text("nodelist")?
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
            },
            "NS_ackmsg" => Classic::Ack {
                seq: hex("ackseq")?,
            },
            "NS_rexmit" => {
                let first = decimal("firstseq")?;
                Classic::Rexmit {
                    first,
                    last: decimal("lastseq").unwrap_or(first),
                }
            }
            "NS_nak_rexmit" => Classic::NakRexmit {
                seq: hex("firstseq")?,
            },
            "starting" => Classic::Starting,
            "resource" => Classic::Resource {
                hold: RscHold::parse(text("rsc_hold")?),
                full: text("rtype") == Some("full"),
                stable: text("isstable").map(|v| v == "1"),
                info: text("info").map(str::to_string),
            },
            "ask_resources" => Classic::AskResources {
                hold: text("rsc_hold").map_or(RscHold::All, RscHold::parse),
                phase: match text("info")? {
                    "me" => StandbyPhase::Me,
                    "other" => StandbyPhase::Other,
                    "done" => StandbyPhase::Done,
                    _ => return None,
                },
            },
            "hb_takeover" => Classic::Takeover {
                hold: text("rsc_hold").map_or(RscHold::All, RscHold::parse),
            },
            "ip-request" => Classic::IpRequest {
                group: text("ipaddr")?.to_string(),
            },
            "ip-request-resp" => Classic::IpRequestResp {
                group: text("ipaddr")?.to_string(),
                weown: text("weown") == Some("yes"),
            },
            "shutdone" => Classic::Shutdone,
            _ => return None,
        })
    }

    /// The message's own fields in heartbeat's order, addressed to `dest` where heartbeat
    /// addresses it: `(name, value)`, all strings.
    pub fn fields(&self, dest: &str) -> Vec<(&'static str, String)> {
        let mut f: Vec<(&'static str, String)> = Vec::with_capacity(6);
        match self {
            Classic::ReqNodes => {
                f.push(("t", "reqnodes".into()));
                f.push(("dest", dest.into()));
            }
            Classic::RepNodes { nodes } => {
                // `HBDoMsg_T_REQNODES`: dest first; every name followed by a space, an
                // empty delete list is one space.
                f.push(("dest", dest.into()));
                f.push(("t", "repnodes".into()));
                f.push(("nodelist", nodes.iter().map(|n| format!("{n} ")).collect()));
                f.push(("delnodelist", " ".into()));
            }
            Classic::Ack { seq } => {
                f.push(("t", "NS_ackmsg".into()));
                f.push(("dest", dest.into()));
                f.push(("ackseq", format!("{seq:x}")));
            }
            Classic::Rexmit { first, last } => {
                f.push(("t", "NS_rexmit".into()));
                f.push(("dest", dest.into()));
                f.push(("firstseq", first.to_string()));
                f.push(("lastseq", last.to_string()));
            }
            Classic::NakRexmit { seq } => {
                f.push(("t", "NS_nak_rexmit".into()));
                f.push(("firstseq", format!("{seq:x}")));
                f.push(("dest", dest.into()));
                f.push(("info", "seqno not found".into()));
            }
            Classic::Starting => f.push(("t", "starting".into())),
            Classic::Resource {
                hold,
                full,
                stable,
                info,
            } => {
                f.push(("t", "resource".into()));
                f.push(("rsc_hold", hold.as_str().into()));
                if *full {
                    f.push(("rtype", "full".into()));
                }
                if let Some(s) = stable {
                    f.push(("isstable", if *s { "1" } else { "0" }.into()));
                }
                if let Some(i) = info {
                    f.push(("info", i.clone()));
                }
            }
            Classic::AskResources { hold, phase } => {
                f.push(("t", "ask_resources".into()));
                f.push(("rsc_hold", hold.as_str().into()));
                f.push(("info", phase.as_str().into()));
            }
            Classic::Takeover { hold } => {
                f.push(("t", "hb_takeover".into()));
                f.push(("rsc_hold", hold.as_str().into()));
            }
            Classic::IpRequest { group } => {
                f.push(("t", "ip-request".into()));
                f.push(("ipaddr", group.clone()));
            }
            Classic::IpRequestResp { group, weown } => {
                f.push(("t", "ip-request-resp".into()));
                f.push(("dest", dest.into()));
                f.push(("ipaddr", group.clone()));
                f.push(("weown", if *weown { "yes" } else { "no" }.into()));
                f.push(("ok", "OK".into()));
            }
            Classic::Shutdone => {
                f.push(("t", "shutdone".into()));
                f.push(("st", "dead".into()));
            }
        }
        f
    }

    /// Whether heartbeat addresses this message (`dest`): then only that node acts on it.
    pub fn addressed(&self) -> bool {
        matches!(
            self,
            Classic::ReqNodes
                | Classic::RepNodes { .. }
                | Classic::Ack { .. }
                | Classic::Rexmit { .. }
                | Classic::NakRexmit { .. }
                | Classic::IpRequestResp { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::message::Message;

    fn message(fields: &[(&str, &str)]) -> Message {
        let mut m = Message::new();
        for (n, v) in fields {
            m.add_str(n, v);
        }
        m
    }

    fn roundtrip(c: Classic) {
        let fields = c.fields("node1");
        let m = message(
            &fields
                .iter()
                .map(|(n, v)| (*n, v.as_str()))
                .collect::<Vec<_>>(),
        );
        assert_eq!(Classic::read(&m), Some(c));
    }

    #[test]
    fn every_message_reads_back_what_it_writes() {
        for c in [
            Classic::ReqNodes,
            Classic::RepNodes {
                nodes: vec!["node1".into(), "node2".into()],
            },
            Classic::Ack { seq: 0x1c },
            Classic::Rexmit {
                first: 117,
                last: 117,
            },
            Classic::NakRexmit { seq: 0x75 },
            Classic::Starting,
            Classic::Resource {
                hold: RscHold::Foreign,
                full: true,
                stable: Some(true),
                info: Some("req_our_resources()".into()),
            },
            Classic::AskResources {
                hold: RscHold::Foreign,
                phase: StandbyPhase::Other,
            },
            Classic::Takeover { hold: RscHold::All },
            Classic::IpRequest {
                group: "wiredummy".into(),
            },
            Classic::IpRequestResp {
                group: "wiredummy".into(),
                weown: true,
            },
            Classic::Shutdone,
        ] {
            roundtrip(c);
        }
    }

    #[test]
    fn repnodes_is_written_as_heartbeat_writes_it() {
        // ucast_md5: dest=node1 t=repnodes nodelist="node1 node2 " delnodelist=" "
        let f = Classic::RepNodes {
            nodes: vec!["node1".into(), "node2".into()],
        }
        .fields("node1");
        let names: Vec<_> = f.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["dest", "t", "nodelist", "delnodelist"]);
        assert_eq!(f[2].1, "node1 node2 ");
        assert_eq!(f[3].1, " ");
    }

    #[test]
    fn rexmit_numbers_are_decimal_and_acks_hex() {
        // captured: firstseq=117 asked for seq 0x75
        let m = message(&[("t", "NS_rexmit"), ("firstseq", "117"), ("lastseq", "117")]);
        assert_eq!(
            Classic::read(&m),
            Some(Classic::Rexmit {
                first: 0x75,
                last: 0x75
            })
        );
        let ack = message(&[("t", "NS_ackmsg"), ("dest", "node2"), ("ackseq", "7")]);
        assert_eq!(Classic::read(&ack), Some(Classic::Ack { seq: 7 }));
    }

    #[test]
    fn rsc_hold_updates_and_mirrors_as_heartbeat_does() {
        assert_eq!(RscHold::Local.update(false, RscHold::Foreign), RscHold::All);
        assert_eq!(RscHold::All.update(false, RscHold::None), RscHold::None);
        assert_eq!(RscHold::All.update(true, RscHold::Local), RscHold::Local);
        assert_eq!(RscHold::Local.mirrored(), RscHold::Foreign);
        assert_eq!(RscHold::All.mirrored(), RscHold::All);
        assert_eq!(RscHold::parse("bogus"), RscHold::None);
    }

    #[test]
    fn status_and_unknown_types_are_not_classic() {
        assert_eq!(Classic::read(&message(&[("t", "status")])), None);
        assert_eq!(Classic::read(&message(&[("t", "crmd")])), None);
        assert_eq!(Classic::read(&message(&[("t", "resource")])), None);
    }
}
