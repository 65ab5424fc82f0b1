//! Kernel network parameters under `/proc/sys/net`.
//!
//! LVS-DR and LVS-TUN directors need `ip_forward`, and hosts that carry a VIP they must not
//! answer ARP for need `arp_ignore=1` / `arp_announce=2` (the modern replacement for the old
//! `hidden` patch). The keys are typed so a typo is a compile error, and reads/writes go to
//! the network namespace of the calling thread. procfs writes are tiny and never block, so
//! plain `std::fs` is used.

use std::path::PathBuf;

/// One network sysctl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sysctl {
    /// `net.ipv4.ip_forward`.
    IpForward,
    /// `net.ipv6.conf.all.forwarding`.
    Ipv6Forwarding,
    /// `net.ipv4.conf.<iface>.arp_ignore` (`all` and `default` are valid interfaces).
    ArpIgnore(String),
    /// `net.ipv4.conf.<iface>.arp_announce`.
    ArpAnnounce(String),
    /// `net.ipv4.conf.<iface>.rp_filter`.
    RpFilter(String),
}

/// Why a sysctl could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// The interface name would escape the sysctl tree.
    #[error("invalid interface name {0:?} in a sysctl key")]
    BadInterface(String),
    /// The file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// `read` or `write`.
        op: &'static str,
        /// The /proc/sys path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Sysctl {
    /// The file under /proc/sys for this key.
    pub fn path(&self) -> Result<PathBuf, SysctlError> {
        let conf = |iface: &str, key: &str| {
            if iface.is_empty() || iface.contains('/') || iface == "." || iface == ".." {
                Err(SysctlError::BadInterface(iface.to_string()))
            } else {
                Ok(PathBuf::from(format!(
                    "/proc/sys/net/ipv4/conf/{iface}/{key}"
                )))
            }
        };
        match self {
            Sysctl::IpForward => Ok(PathBuf::from("/proc/sys/net/ipv4/ip_forward")),
            Sysctl::Ipv6Forwarding => Ok(PathBuf::from("/proc/sys/net/ipv6/conf/all/forwarding")),
            Sysctl::ArpIgnore(i) => conf(i, "arp_ignore"),
            Sysctl::ArpAnnounce(i) => conf(i, "arp_announce"),
            Sysctl::RpFilter(i) => conf(i, "rp_filter"),
        }
    }

    /// Reads the value, trimmed.
    pub fn read(&self) -> Result<String, SysctlError> {
        let path = self.path()?;
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|source| SysctlError::Io {
                op: "read",
                path: path.display().to_string(),
                source,
            })
    }

    /// Writes the value.
    pub fn write(&self, value: &str) -> Result<(), SysctlError> {
        let path = self.path()?;
        std::fs::write(&path, format!("{value}\n")).map_err(|source| SysctlError::Io {
            op: "write",
            path: path.display().to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            Sysctl::ArpIgnore("eth0".into()).path().unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0/arp_ignore")
        );
        assert_eq!(
            Sysctl::IpForward.path().unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert!(Sysctl::ArpAnnounce("../x".into()).path().is_err());
        assert!(Sysctl::RpFilter("..".into()).path().is_err());
    }

    #[test]
    fn reads_ip_forward() {
        let v = Sysctl::IpForward.read().unwrap();
        assert!(v == "0" || v == "1", "{v}");
    }
}
