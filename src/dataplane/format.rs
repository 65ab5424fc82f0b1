//! `ipvsadm -Ln` table text and `ipvsadm-save -n` rule text for `hactl ipvs` /
//! `hactl ipvs save`, so operators keep the views and scripts they know.
//!
//! Column layout as printed by ipvsadm 1.31 (`print_service_entry`: real lines are
//! `"  -> %-28s %-7s %-6d %-10u %-10u"`). Connection counters are not part of the model
//! and print as 0.

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

/// The `ipvsadm -Ln` view.
pub fn table(services: &[VirtualService]) -> String {
    let mut s = String::new();
    s.push_str("Prot LocalAddress:Port Scheduler Flags\n");
    s.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
    for vs in services {
        let _ = write!(s, "{} {}", vs.key, vs.scheduler);
        if let Some(p) = &vs.persistence {
            let _ = write!(s, " persistent {}", p.timeout.as_secs());
            if let Some(m) = mask_text(vs.key.family(), p.netmask) {
                let _ = write!(s, " mask {m}");
            }
        }
        s.push('\n');
        for r in &vs.reals {
            let _ = writeln!(
                s,
                "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
                r.addr.to_string(),
                forward_word(r.forwarding),
                r.weight,
                0,
                0
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
    fn empty_table_has_headers_only() {
        assert_eq!(table(&[]).lines().count(), 2);
        assert_eq!(save(&[]), "");
    }
}
