//! `ipvsadm -Ln` table text and `ipvsadm-save -n` rule text for `hactl ipvs` /
//! `hactl ipvs save`, so operators keep the views and scripts they know.
//!
//! Column layout as printed by ipvsadm 1.31 (`print_service_entry`: real lines are
//! `"  -> %-28s %-7s %-6d %-10u %-10u"`). [`listing`] is the whole `ipvsadm -Ln` output:
//! ipvsadm's first line (`IP Virtual Server version 1.2.1 (size=4096)`, which parsers such as
//! ldirectord's skip with the two header lines), the counters, and under the table what the
//! dataplane approximates.

use std::fmt::Write as _;

use super::model::{Family, Forwarding, Netmask, ServiceKey, VirtualService};

fn forward_word(f: Forwarding) -> &'static str {
    match f {
        Forwarding::Gate => "Route",
        Forwarding::Masq => "Masq",
        Forwarding::Ipip => "Tunnel",
    }
}

fn forward_flag(f: Forwarding) -> &'static str {
    match f {
        Forwarding::Gate => "-g",
        Forwarding::Masq => "-m",
        Forwarding::Ipip => "-i",
    }
}

fn mask_text(family: Family, m: Netmask) -> Option<String> {
    if m == Netmask::host(family) {
        return None;
    }
    Some(match family {
        Family::V4 => m.to_v4().to_string(),
        Family::V6 => m.prefix.to_string(),
    })
}

/// Puts services and their reals in the order `ipvsadm -Ln` and `ipvsadm -Sn` print them
/// (ipvsadm sorts unless `--nosort`; libipvs `ipvs_cmp_services`: firewall mark (0 for
/// address services, so those come first), family, protocol, address, port; reals by
/// family, address, port), so `hactl ipvs` prints exactly what ipvsadm prints.
pub fn sort_like_ipvsadm(services: &mut [VirtualService]) {
    fn family(ip: &std::net::IpAddr) -> u8 {
        if ip.is_ipv4() { 2 } else { 10 }
    }
    services.sort_by_key(|vs| match vs.key {
        ServiceKey::Tcp(a) => (0, family(&a.ip()), 6, a.ip(), a.port()),
        ServiceKey::Udp(a) => (0, family(&a.ip()), 17, a.ip(), a.port()),
        ServiceKey::Fwmark(m, f) => (
            m,
            if f == Family::V4 { 2 } else { 10 },
            0,
            std::net::IpAddr::from([0u8; 4]),
            0,
        ),
    });
    for vs in services.iter_mut() {
        vs.reals
            .sort_by_key(|r| (family(&r.addr.ip()), r.addr.ip(), r.addr.port()));
    }
}

/// The IPVS version hbd's views follow (`IP_VS_VERSION_CODE` 1.2.1 of Linux).
pub const IPVS_VERSION: u32 = 0x01_02_01;

/// ipvsadm's first line: `IP Virtual Server version 1.2.1 (size=4096)`.
pub fn version_line(version: u32, size: u32) -> String {
    format!(
        "IP Virtual Server version {}.{}.{} (size={size})",
        (version >> 16) & 0xff,
        (version >> 8) & 0xff,
        version & 0xff
    )
}

/// The `ipvsadm -Ln` table without counters (they print as 0).
pub fn table(services: &[VirtualService]) -> String {
    table_with(services, &super::model::Connections::new())
}

/// The whole `hactl ipvs` output: `header` (see [`version_line`]), the table with each
/// real's connection counts, then one `# note` line per approximation of the dataplane.
pub fn listing(
    header: &str,
    services: &[VirtualService],
    connections: &super::model::Connections,
    notes: &[String],
) -> String {
    let mut s = format!("{header}\n");
    s.push_str(&table_with(services, connections));
    for n in notes {
        let _ = writeln!(s, "# {n}");
    }
    s
}

/// The whole `hactl ipvs --persistent-conn` output, as `ipvsadm -Ln --persistent-conn`
/// prints it (`print_title`/`print_service_entry` with `FMT_PERSISTENTCONN`: the title
/// `"%-33s %-9s %-11s %-10s %-10s"`, reals `"  -> %-28s %-9u %-11u %-10u %-10u"`: weight,
/// persistence templates, active and inactive connections).
pub fn listing_persistent(
    header: &str,
    services: &[VirtualService],
    connections: &super::model::Connections,
) -> String {
    let mut s = format!("{header}\n");
    let _ = writeln!(
        s,
        "{:<33} {:<9} {:<11} {:<10} {:<10}",
        "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn"
    );
    s.push_str("  -> RemoteAddress:Port\n");
    for vs in services {
        service_line(&mut s, vs);
        for r in &vs.reals {
            let c = connections
                .get(&(vs.key, r.addr))
                .copied()
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  -> {:<28} {:<9} {:<11} {:<10} {:<10}",
                r.addr.to_string(),
                r.weight,
                c.persistent,
                c.active,
                c.inactive
            );
        }
    }
    s
}

/// `TCP  192.0.2.10:80 wrr [persistent N [mask M]]`.
fn service_line(s: &mut String, vs: &VirtualService) {
    let _ = write!(s, "{} {}", vs.key, vs.scheduler);
    if let Some(p) = &vs.persistence {
        let _ = write!(s, " persistent {}", p.timeout.as_secs());
        if let Some(m) = mask_text(vs.key.family(), p.netmask) {
            let _ = write!(s, " mask {m}");
        }
    }
    s.push('\n');
}

fn table_with(services: &[VirtualService], connections: &super::model::Connections) -> String {
    let mut s = String::new();
    s.push_str("Prot LocalAddress:Port Scheduler Flags\n");
    s.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
    for vs in services {
        service_line(&mut s, vs);
        for r in &vs.reals {
            let c = connections
                .get(&(vs.key, r.addr))
                .copied()
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
                r.addr.to_string(),
                forward_word(r.forwarding),
                r.weight,
                c.active,
                c.inactive
            );
        }
    }
    s
}

fn key_args(k: &ServiceKey) -> String {
    match k {
        ServiceKey::Tcp(a) => format!("-t {a}"),
        ServiceKey::Udp(a) => format!("-u {a}"),
        ServiceKey::Fwmark(m, Family::V4) => format!("-f {m}"),
        ServiceKey::Fwmark(m, Family::V6) => format!("-f {m} -6"),
    }
}

/// The `ipvsadm-save -n` text (restorable with `ipvsadm-restore`).
pub fn save(services: &[VirtualService]) -> String {
    let mut s = String::new();
    for vs in services {
        let k = key_args(&vs.key);
        let _ = write!(s, "-A {k} -s {}", vs.scheduler);
        if let Some(p) = &vs.persistence {
            let _ = write!(s, " -p {}", p.timeout.as_secs());
            if let Some(m) = mask_text(vs.key.family(), p.netmask) {
                let _ = write!(s, " -M {m}");
            }
        }
        s.push('\n');
        for r in &vs.reals {
            let _ = write!(
                s,
                "-a {k} -r {} {} -w {}",
                r.addr,
                forward_flag(r.forwarding),
                r.weight
            );
            if r.upper_threshold != 0 {
                let _ = write!(s, " -x {}", r.upper_threshold);
            }
            if r.lower_threshold != 0 {
                let _ = write!(s, " -y {}", r.lower_threshold);
            }
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::model::{Persistence, RealServer, Scheduler};
    use std::time::Duration;

    fn sample() -> Vec<VirtualService> {
        let mut web = VirtualService::new(
            ServiceKey::Tcp("192.0.2.10:80".parse().unwrap()),
            Scheduler::Wrr,
        );
        web.persistence = Some(Persistence {
            timeout: Duration::from_secs(300),
            netmask: Netmask { prefix: 24 },
        });
        web.reals = vec![
            RealServer {
                weight: 2,
                ..RealServer::new("198.51.100.1:80".parse().unwrap(), Forwarding::Masq)
            },
            RealServer {
                weight: 0,
                upper_threshold: 50,
                lower_threshold: 10,
                ..RealServer::new("198.51.100.2:80".parse().unwrap(), Forwarding::Gate)
            },
        ];
        let mut dns = VirtualService::new(
            ServiceKey::Udp("[2001:db8::53]:53".parse().unwrap()),
            Scheduler::Rr,
        );
        dns.reals = vec![RealServer::new(
            "[2001:db8::1]:53".parse().unwrap(),
            Forwarding::Ipip,
        )];
        let fw = VirtualService::new(ServiceKey::Fwmark(7, Family::V4), Scheduler::Sh);
        vec![web, dns, fw]
    }

    #[test]
    fn table_text() {
        let expect = "\
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  192.0.2.10:80 wrr persistent 300 mask 255.255.255.0
  -> 198.51.100.1:80              Masq    2      0          0         
  -> 198.51.100.2:80              Route   0      0          0         
UDP  [2001:db8::53]:53 rr
  -> [2001:db8::1]:53             Tunnel  1      0          0         
FWM  7 sh
";
        assert_eq!(table(&sample()), expect);
    }

    #[test]
    fn save_text() {
        let expect = "\
-A -t 192.0.2.10:80 -s wrr -p 300 -M 255.255.255.0
-a -t 192.0.2.10:80 -r 198.51.100.1:80 -m -w 2
-a -t 192.0.2.10:80 -r 198.51.100.2:80 -g -w 0 -x 50 -y 10
-A -u [2001:db8::53]:53 -s rr
-a -u [2001:db8::53]:53 -r [2001:db8::1]:53 -i -w 1
-A -f 7 -s sh
";
        assert_eq!(save(&sample()), expect);
    }

    #[test]
    fn listing_keeps_ipvsadms_first_line_counters_and_notes() {
        let services = sample();
        let mut c = crate::dataplane::Connections::new();
        c.insert(
            (services[0].key, services[0].reals[0].addr),
            crate::dataplane::RealConnections {
                active: 12,
                inactive: 3,
                persistent: 0,
            },
        );
        let text = listing(
            &version_line(IPVS_VERSION, 4096),
            &services,
            &c,
            &["scheduler wlc approximated as wrr under nftables".into()],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "IP Virtual Server version 1.2.1 (size=4096)");
        // ldirectord's parser skips three lines, then reads services.
        assert!(lines[3].starts_with("TCP  192.0.2.10:80 wrr"), "{text}");
        assert_eq!(
            lines[4],
            "  -> 198.51.100.1:80              Masq    2      12         3         "
        );
        assert_eq!(
            *lines.last().unwrap(),
            "# scheduler wlc approximated as wrr under nftables"
        );
    }

    /// Against the layout ipvsadm 1.31 prints for `-Ln --persistent-conn` (the VM tier diffs
    /// the whole output against the real ipvsadm).
    #[test]
    fn persistent_listing_has_ipvsadms_columns() {
        let services = sample();
        let mut c = crate::dataplane::Connections::new();
        c.insert(
            (services[0].key, services[0].reals[0].addr),
            crate::dataplane::RealConnections {
                active: 1,
                inactive: 4,
                persistent: 2,
            },
        );
        let text = listing_persistent(&version_line(IPVS_VERSION, 4096), &services, &c);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn "
        );
        assert_eq!(lines[2], "  -> RemoteAddress:Port");
        assert!(lines[3].starts_with("TCP  192.0.2.10:80 wrr"), "{text}");
        assert_eq!(
            lines[4],
            "  -> 198.51.100.1:80              2         2           1          4         "
        );
    }

    #[test]
    fn services_and_reals_sort_as_ipvsadm_sorts() {
        let mut s = sample();
        s.reverse();
        s[2].reals.reverse();
        let mut udp_low = VirtualService::new(
            ServiceKey::Udp("192.0.2.9:53".parse().unwrap()),
            Scheduler::Rr,
        );
        udp_low.reals = vec![];
        s.push(udp_low);
        sort_like_ipvsadm(&mut s);
        let keys: Vec<String> = s.iter().map(|v| v.key.to_string()).collect();
        // address services first (IPv4 before IPv6, TCP before UDP), then marks
        assert_eq!(
            keys,
            [
                "TCP  192.0.2.10:80",
                "UDP  192.0.2.9:53",
                "UDP  [2001:db8::53]:53",
                "FWM  7"
            ]
        );
        assert_eq!(
            s[0].reals[0].addr,
            "198.51.100.1:80".parse::<std::net::SocketAddr>().unwrap()
        );
    }

    #[test]
    fn empty_table_has_headers_only() {
        assert_eq!(table(&[]).lines().count(), 2);
        assert_eq!(save(&[]), "");
    }
}
