//! The IPVS connection synchronisation daemon, started and stopped over generic netlink as
//! `ipvsadm --start-daemon master|backup --mcast-interface IF --syncid N` does.
//!
//! The active director runs the master: the kernel multicasts each connection's state
//! (224.0.0.81:8848 on the interface) so the standby's backup daemon builds the same
//! connection table, and after a failover the new active forwards established connections
//! to the same real instead of dropping or resetting them (LVS HOWTO "Failover of
//! connections"; keepalived's `lvs_sync_daemon`). Layout from `include/uapi/linux/ip_vs.h`:
//! `IPVS_CMD_NEW_DAEMON`/`DEL_DAEMON`/`GET_DAEMON` with a nested `IPVS_CMD_ATTR_DAEMON` of
//! `IPVS_DAEMON_ATTR_STATE` (`IP_VS_STATE_MASTER` 1, `IP_VS_STATE_BACKUP` 2),
//! `IPVS_DAEMON_ATTR_MCAST_IFN` and `IPVS_DAEMON_ATTR_SYNC_ID` (`ip_vs_genl_new_daemon`
//! requires all three).
//!
//! [`switch_plan`] is the pure decision (which daemons to stop and start for a role);
//! `Ipvs::sync_daemons` and `Ipvs::apply_sync` (defined here) are the I/O.

use super::ipvs::{IPVS_GENL_VERSION, Ipvs};
use super::netlink::{
    Attr, DecodeError, MsgWriter, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, find, parse_attrs,
};
use super::reconcile::DataplaneError;

fn need<'a, 'b>(
    attrs: &'b [Attr<'a>],
    kind: u16,
    what: &'static str,
) -> Result<&'b Attr<'a>, DecodeError> {
    find(attrs, kind).ok_or(DecodeError::Invalid {
        what,
        why: "missing".into(),
    })
}

/// `IPVS_CMD_NEW_DAEMON`.
const CMD_NEW_DAEMON: u8 = 9;
/// `IPVS_CMD_DEL_DAEMON`.
const CMD_DEL_DAEMON: u8 = 10;
/// `IPVS_CMD_GET_DAEMON`.
const CMD_GET_DAEMON: u8 = 11;
/// `IPVS_CMD_ATTR_DAEMON`.
const CMD_ATTR_DAEMON: u16 = 3;
/// `IPVS_DAEMON_ATTR_STATE`.
const DAEMON_ATTR_STATE: u16 = 1;
/// `IPVS_DAEMON_ATTR_MCAST_IFN`.
const DAEMON_ATTR_MCAST_IFN: u16 = 2;
/// `IPVS_DAEMON_ATTR_SYNC_ID`.
const DAEMON_ATTR_SYNC_ID: u16 = 3;
/// `IP_VS_IFNAME_MAXLEN` (16, with the NUL).
pub const IFNAME_MAX: usize = 15;

/// Which half of the connection sync a daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncRole {
    /// Sends the connection table (`IP_VS_STATE_MASTER`): the active director.
    Master,
    /// Receives it (`IP_VS_STATE_BACKUP`): the standby.
    Backup,
}

impl SyncRole {
    fn state(self) -> u32 {
        match self {
            SyncRole::Master => 1,
            SyncRole::Backup => 2,
        }
    }

    /// The other role.
    pub fn other(self) -> SyncRole {
        match self {
            SyncRole::Master => SyncRole::Backup,
            SyncRole::Backup => SyncRole::Master,
        }
    }

    /// `master` or `backup`, as ipvsadm writes it.
    pub fn name(self) -> &'static str {
        match self {
            SyncRole::Master => "master",
            SyncRole::Backup => "backup",
        }
    }
}

/// One running (or wanted) sync daemon.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SyncDaemon {
    /// Master or backup.
    pub role: SyncRole,
    /// The multicast interface (`--mcast-interface`).
    pub interface: String,
    /// The sync id (`--syncid`, 0-255): a backup takes only its master's messages.
    pub sync_id: u8,
}

/// One step of [`switch_plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStep {
    /// `IPVS_CMD_DEL_DAEMON` for this role.
    Stop(SyncRole),
    /// `IPVS_CMD_NEW_DAEMON`.
    Start(SyncDaemon),
}

/// What to do so that exactly `wanted` runs: the other role is stopped (a node is either
/// the active or the standby), and `wanted`'s role is (re)started unless it already runs
/// with the same interface and sync id. Stops come first: the kernel refuses to start a
/// role that runs already (`EEXIST`).
pub fn switch_plan(running: &[SyncDaemon], wanted: &SyncDaemon) -> Vec<SyncStep> {
    let mut steps = Vec::new();
    let other = wanted.role.other();
    if running.iter().any(|d| d.role == other) {
        steps.push(SyncStep::Stop(other));
    }
    match running.iter().find(|d| d.role == wanted.role) {
        Some(d) if d == wanted => {}
        Some(_) => {
            steps.push(SyncStep::Stop(wanted.role));
            steps.push(SyncStep::Start(wanted.clone()));
        }
        None => steps.push(SyncStep::Start(wanted.clone())),
    }
    steps
}

/// Encode `IPVS_CMD_NEW_DAEMON`.
pub fn encode_new_daemon(w: &mut MsgWriter, family: u16, seq: u32, d: &SyncDaemon) {
    w.begin_msg(family, NLM_F_REQUEST | NLM_F_ACK, seq);
    w.raw(&[CMD_NEW_DAEMON, IPVS_GENL_VERSION, 0, 0]);
    w.begin_nest(CMD_ATTR_DAEMON);
    w.u32(DAEMON_ATTR_STATE, d.role.state());
    w.str(DAEMON_ATTR_MCAST_IFN, &d.interface);
    w.u32(DAEMON_ATTR_SYNC_ID, u32::from(d.sync_id));
    w.end_nest();
    w.end_msg();
}

/// Encode `IPVS_CMD_DEL_DAEMON` for one role.
pub fn encode_del_daemon(w: &mut MsgWriter, family: u16, seq: u32, role: SyncRole) {
    w.begin_msg(family, NLM_F_REQUEST | NLM_F_ACK, seq);
    w.raw(&[CMD_DEL_DAEMON, IPVS_GENL_VERSION, 0, 0]);
    w.begin_nest(CMD_ATTR_DAEMON);
    w.u32(DAEMON_ATTR_STATE, role.state());
    w.end_nest();
    w.end_msg();
}

/// Encode the `IPVS_CMD_GET_DAEMON` dump (one answer per running daemon).
pub fn encode_get_daemons(w: &mut MsgWriter, family: u16, seq: u32) {
    w.begin_msg(family, NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP, seq);
    w.raw(&[CMD_GET_DAEMON, IPVS_GENL_VERSION, 0, 0]);
    w.end_msg();
}

/// One `GET_DAEMON` answer.
pub fn decode_daemon(genl_payload: &[u8]) -> Result<SyncDaemon, DecodeError> {
    let attrs = parse_attrs(genl_payload.get(4..).unwrap_or(&[]))?;
    let d = need(&attrs, CMD_ATTR_DAEMON, "sync daemon")?.nested()?;
    let role = match need(&d, DAEMON_ATTR_STATE, "sync daemon state")?.u32()? {
        1 => SyncRole::Master,
        2 => SyncRole::Backup,
        other => {
            return Err(DecodeError::Invalid {
                what: "sync daemon state",
                why: format!("{other} is neither master (1) nor backup (2)"),
            });
        }
    };
    let interface = find(&d, DAEMON_ATTR_MCAST_IFN)
        .map(|a| a.str().map(str::to_string))
        .transpose()?
        .unwrap_or_default();
    let id = need(&d, DAEMON_ATTR_SYNC_ID, "sync id")?.u32()?;
    Ok(SyncDaemon {
        role,
        interface,
        sync_id: u8::try_from(id).map_err(|_| DecodeError::Invalid {
            what: "sync id",
            why: format!("{id} is over 255"),
        })?,
    })
}

impl Ipvs {
    /// The sync daemons running in this network namespace (`ipvsadm -L --daemon`).
    pub fn sync_daemons(&mut self) -> Result<Vec<SyncDaemon>, DataplaneError> {
        self.dump_with(encode_get_daemons, decode_daemon)
    }

    /// Makes exactly `wanted` run ([`switch_plan`]); returns the steps taken.
    pub fn apply_sync(&mut self, wanted: &SyncDaemon) -> Result<Vec<SyncStep>, DataplaneError> {
        let running = self.sync_daemons()?;
        let steps = switch_plan(&running, wanted);
        for step in &steps {
            self.sync_step(step)?;
        }
        Ok(steps)
    }

    /// Stops the daemon of `role` if it runs; returns whether one ran.
    pub fn stop_sync(&mut self, role: SyncRole) -> Result<bool, DataplaneError> {
        if !self.sync_daemons()?.iter().any(|d| d.role == role) {
            return Ok(false);
        }
        self.sync_step(&SyncStep::Stop(role))?;
        Ok(true)
    }

    fn sync_step(&mut self, step: &SyncStep) -> Result<(), DataplaneError> {
        match step {
            SyncStep::Stop(role) => self.request(
                &format!("stop the {} sync daemon", role.name()),
                |w, family, seq| encode_del_daemon(w, family, seq, *role),
            ),
            SyncStep::Start(d) => self.request(
                &format!(
                    "start the {} sync daemon on {} (syncid {})",
                    d.role.name(),
                    d.interface,
                    d.sync_id
                ),
                |w, family, seq| encode_new_daemon(w, family, seq, d),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(role: SyncRole, ifn: &str, id: u8) -> SyncDaemon {
        SyncDaemon {
            role,
            interface: ifn.into(),
            sync_id: id,
        }
    }

    #[test]
    fn the_active_stops_the_backup_and_starts_the_master() {
        let master = daemon(SyncRole::Master, "eth0", 7);
        let backup = daemon(SyncRole::Backup, "eth0", 7);
        assert_eq!(
            switch_plan(std::slice::from_ref(&backup), &master),
            vec![
                SyncStep::Stop(SyncRole::Backup),
                SyncStep::Start(master.clone())
            ]
        );
        assert_eq!(
            switch_plan(&[], &backup),
            vec![SyncStep::Start(backup.clone())]
        );
        // Already as wanted: nothing to do.
        assert_eq!(switch_plan(std::slice::from_ref(&master), &master), vec![]);
        // Another interface or id: restarted.
        let moved = daemon(SyncRole::Master, "eth1", 7);
        assert_eq!(
            switch_plan(std::slice::from_ref(&master), &moved),
            vec![
                SyncStep::Stop(SyncRole::Master),
                SyncStep::Start(moved.clone())
            ]
        );
    }

    /// The bytes `ipvsadm --start-daemon master --mcast-interface eth0 --syncid 7` sends
    /// (libipvs `ipvs_start_daemon`), header and nest lengths included.
    #[test]
    fn new_daemon_bytes() {
        let mut w = MsgWriter::new();
        encode_new_daemon(&mut w, 0x22, 5, &daemon(SyncRole::Master, "eth0", 7));
        let b = &w.buf;
        // nlmsghdr: len, type (the family id), flags REQUEST|ACK, seq.
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 0x22);
        assert_eq!(u16::from_ne_bytes([b[6], b[7]]), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 5);
        assert_eq!(&b[16..20], &[9, 1, 0, 0]);
        // The nest: 4 + (8 state) + (4 + "eth0\0" padded to 8 = 12) + (8 id) = 32.
        assert_eq!(u16::from_ne_bytes([b[20], b[21]]), 32);
        assert_eq!(u16::from_ne_bytes([b[22], b[23]]), CMD_ATTR_DAEMON | 0x8000);
        assert_eq!(&b[24..32], &[8, 0, 1, 0, 1, 0, 0, 0]);
        assert_eq!(
            &b[32..44],
            &[9, 0, 2, 0, b'e', b't', b'h', b'0', 0, 0, 0, 0]
        );
        assert_eq!(&b[44..52], &[8, 0, 3, 0, 7, 0, 0, 0]);
        assert_eq!(b.len(), 52);
    }

    #[test]
    fn del_daemon_names_only_the_role() {
        let mut w = MsgWriter::new();
        encode_del_daemon(&mut w, 0x22, 6, SyncRole::Backup);
        let b = &w.buf;
        assert_eq!(&b[16..20], &[10, 1, 0, 0]);
        assert_eq!(u16::from_ne_bytes([b[20], b[21]]), 12);
        assert_eq!(&b[24..32], &[8, 0, 1, 0, 2, 0, 0, 0]);
        assert_eq!(b.len(), 32);
    }

    #[test]
    fn daemons_decode_and_garbage_is_refused() {
        // A GET_DAEMON answer: genl header, then the nest (what ip_vs_genl_dump_daemon sends).
        let mut w = MsgWriter::new();
        encode_new_daemon(&mut w, 0x22, 1, &daemon(SyncRole::Backup, "br0", 200));
        let payload = &w.buf[16..];
        assert_eq!(
            decode_daemon(payload).unwrap(),
            daemon(SyncRole::Backup, "br0", 200)
        );
        assert!(decode_daemon(&[]).is_err());
        assert!(decode_daemon(&payload[..payload.len() - 3]).is_err());
        let mut dump = MsgWriter::new();
        encode_get_daemons(&mut dump, 0x22, 2);
        assert_eq!(&dump.buf[16..20], &[11, 1, 0, 0]);
        assert_eq!(
            u16::from_ne_bytes([dump.buf[6], dump.buf[7]]),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP
        );
    }
}
