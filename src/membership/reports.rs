//! Group reports: what a node says about each resource group in its heartbeats, and the
//! `hbd_groups` field that carries them, beside the wire codec that carries the field.
//!
//! heartbeat 3.0.6 ignores fields it does not know, so the field rides in every `status`
//! without disturbing a heartbeat peer. The ownership rules that read the reports live in
//! [`crate::manager`].

use serde::{Deserialize, Serialize};

/// Field of our `status` messages that carries our group reports (ignored by heartbeat).
pub const GROUPS_FIELD: &str = "hbd_groups";

/// Where a group should run, and how recent that decision is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Node that should hold the group.
    pub target: String,
    /// Decision counter; higher wins.
    pub epoch: u64,
}

impl Placement {
    /// The group is to be held by `target` now: a new decision, one epoch on.
    pub fn move_to(&mut self, target: &str) {
        self.target = target.to_string();
        self.epoch = next_epoch(self.epoch);
    }
}

/// What one node says about one group in its heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReport {
    /// Group key.
    pub group: String,
    /// Whether resources of the group may be active on the sender.
    pub holds: bool,
    /// Whether the group failed on the sender: its last start failed (with `holds` false),
    /// or a stop failed and it may still run there (with `holds` true).
    pub failed: bool,
    /// The sender's placement.
    pub placement: Placement,
}

/// Encodes reports for the `hbd_groups` heartbeat field: `group|holds|failed|target|epoch`
/// per group, `;`-separated, with `%`, `|` and `;` percent-escaped in names.
pub fn encode_reports(reports: &[GroupReport]) -> String {
    reports
        .iter()
        .map(|r| {
            format!(
                "{}|{}|{}|{}|{}",
                escape(&r.group),
                u8::from(r.holds),
                u8::from(r.failed),
                escape(&r.placement.target),
                r.placement.epoch
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Highest placement epoch a report may carry. A move adds one to the epoch, so one that
/// may still grow for 2^63 moves can never wrap; a report above it is refused (issue #15,
/// defect 1: a forged `u64::MAX` wrapped to 0 in a release build and pinned the group).
pub const MAX_EPOCH: u64 = u64::MAX / 2;

/// Why a peer's reports were refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The field does not parse.
    #[error("bad {GROUPS_FIELD} field")]
    Malformed,
    /// A placement names a node outside the cluster.
    #[error("{GROUPS_FIELD}: group {group} is placed on {target:?}, which is not a cluster node")]
    UnknownTarget {
        /// Group key.
        group: String,
        /// The node named.
        target: String,
    },
    /// A placement epoch so high that moving the group again could wrap it.
    #[error("{GROUPS_FIELD}: group {group} has epoch {epoch}, above the limit {MAX_EPOCH}")]
    EpochTooHigh {
        /// Group key.
        group: String,
        /// The epoch received.
        epoch: u64,
    },
}

/// Checks decoded reports against the cluster: every target is one of `nodes`, no epoch is
/// above [`MAX_EPOCH`]. One bad report refuses them all, as a malformed field does.
pub fn validate_reports(reports: &[GroupReport], nodes: &[&str]) -> Result<(), ReportError> {
    for r in reports {
        if !nodes.contains(&r.placement.target.as_str()) {
            return Err(ReportError::UnknownTarget {
                group: r.group.clone(),
                target: r.placement.target.clone(),
            });
        }
        if r.placement.epoch > MAX_EPOCH {
            return Err(ReportError::EpochTooHigh {
                group: r.group.clone(),
                epoch: r.placement.epoch,
            });
        }
    }
    Ok(())
}

/// The epoch after `epoch`: never wraps (it stops at `u64::MAX`, unreachable from a
/// validated report).
pub fn next_epoch(epoch: u64) -> u64 {
    epoch.saturating_add(1)
}

/// Decodes an `hbd_groups` field; `None` if any part is malformed (the whole field is then
/// ignored, never half-applied).
pub fn decode_reports(text: &str) -> Option<Vec<GroupReport>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(';')
        .map(|item| {
            let parts: Vec<&str> = item.split('|').collect();
            let [group, holds, failed, target, epoch] = parts.as_slice() else {
                return None;
            };
            Some(GroupReport {
                group: unescape(group)?,
                holds: parse_flag(holds)?,
                failed: parse_flag(failed)?,
                placement: Placement {
                    target: unescape(target)?,
                    epoch: epoch.parse().ok()?,
                },
            })
        })
        .collect()
}

fn parse_flag(s: &str) -> Option<bool> {
    match s {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '|' => out.push_str("%7C"),
            ';' => out.push_str("%3B"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let code = rest.get(pos + 1..pos + 3)?;
        out.push(char::from(u8::from_str_radix(code, 16).ok()?));
        rest = &rest[pos + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(target: &str, epoch: u64) -> GroupReport {
        GroupReport {
            group: "g".into(),
            holds: false,
            failed: false,
            placement: Placement {
                target: target.into(),
                epoch,
            },
        }
    }

    #[test]
    fn reports_naming_a_stranger_or_a_wrapping_epoch_are_refused() {
        let nodes = ["a", "b"];
        assert_eq!(validate_reports(&[report("b", 7)], &nodes), Ok(()));
        assert_eq!(validate_reports(&[report("a", MAX_EPOCH)], &nodes), Ok(()));
        assert!(matches!(
            validate_reports(&[report("b", 1), report("x", 1)], &nodes),
            Err(ReportError::UnknownTarget { target, .. }) if target == "x"
        ));
        let text = encode_reports(&[report("b", u64::MAX)]);
        let decoded = decode_reports(&text).expect("it parses");
        assert!(matches!(
            validate_reports(&decoded, &nodes),
            Err(ReportError::EpochTooHigh {
                epoch: u64::MAX,
                ..
            })
        ));
        assert_eq!(next_epoch(u64::MAX), u64::MAX);
    }
}
