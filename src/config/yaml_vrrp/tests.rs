//! The YAML `vrrp:` section: parsing into the model keepalived.conf gives, refusals at their
//! line, and the keepalived.conf → YAML → model round trip over the seeds.

use std::path::PathBuf;

use super::*;
use crate::config::keepalived::{load_keepalived, load_keepalived_str};
use crate::config::{Severity, load_yaml_vrrp_str};

fn yaml(text: &str) -> (VrrpYaml, Vec<String>) {
    load_yaml_vrrp_str(text, Path::new("hbd.yaml"), "lb1")
        .map(|(c, w)| (c, w.iter().map(ToString::to_string).collect()))
        .unwrap_or_else(|e| panic!("refused:\n{e}"))
}

fn errors(text: &str) -> Vec<String> {
    match load_yaml_vrrp_str(text, Path::new("hbd.yaml"), "lb1") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.errors().map(ToString::to_string).collect(),
    }
}

fn keepalived(text: &str) -> KeepalivedConfig {
    load_keepalived_str(text, Path::new("keepalived.conf"))
        .unwrap_or_else(|e| panic!("refused:\n{e}"))
        .0
}

/// The model without where each instance was declared (a YAML line or a keepalived.conf
/// line), which is all that differs between two front doors.
fn without_origins(mut c: KeepalivedConfig) -> KeepalivedConfig {
    for i in &mut c.vrrp.instances {
        i.origin = Default::default();
    }
    c
}

const FULL: &str = r#"
cluster: lvs
vrrp:
  router_id: LVS01
  version: 3
  mcast_group4: 224.0.0.19
  script_security: true
  garp: { delay: 2s, repeat: 3, refresh: 60s, refresh_repeat: 2, lower_prio_repeat: 1 }
  scripts:
    - name: chk_web
      script: "/usr/local/bin/chk web"
      interval: 2
      timeout: 500ms
      weight: -30
      fall: 3
      rise: 2
  instances:
    - name: VI_1
      interface: eth0
      virtual_router_id: 51
      priority: 150
      advert_int: 50ms
      state: master
      preempt_delay: 10
      virtual_ipaddress:
        - 192.0.2.10/24
        - { address: 192.0.2.11, dev: eth1, label: "eth1:1" }
      virtual_ipaddress_excluded: [192.0.2.12]
      unicast_src_ip: 198.51.100.1
      unicast_peer: [198.51.100.2]
      track_interface: [eth1, { name: eth2, weight: -10 }]
      track_script: [chk_web]
      notify: { master: "/bin/notify master", any: /bin/notify-all }
    - name: VI_2
      interface: eth1
      virtual_router_id: 52
      version: 2
      advert_int: 1
      preempt: false
      auth_pass: secret12
      virtual_ipaddress: [198.51.100.254/24]
      garp: { delay: 0, repeat: 1, refresh: off, refresh_repeat: 1, lower_prio_repeat: 1 }
  sync_groups:
    - { name: G1, group: [VI_1, VI_2], notify: { backup: /bin/g-backup } }
"#;

/// FULL written as keepalived.conf.
const FULL_CONF: &str = r#"
global_defs {
  router_id LVS01
  vrrp_version 3
  vrrp_mcast_group4 224.0.0.19
  enable_script_security
  vrrp_garp_master_delay 2
  vrrp_garp_master_repeat 3
  vrrp_garp_master_refresh 60
  vrrp_garp_master_refresh_repeat 2
  vrrp_garp_lower_prio_repeat 1
}
vrrp_script chk_web {
  script "/usr/local/bin/chk web"
  interval 2
  timeout 0.5
  weight -30
  fall 3
  rise 2
}
vrrp_instance VI_1 {
  state MASTER
  interface eth0
  virtual_router_id 51
  priority 150
  advert_int 0.05
  preempt_delay 10
  virtual_ipaddress {
    192.0.2.10/24
    192.0.2.11 dev eth1 label eth1:1
  }
  virtual_ipaddress_excluded {
    192.0.2.12
  }
  unicast_src_ip 198.51.100.1
  unicast_peer {
    198.51.100.2
  }
  track_interface {
    eth1
    eth2 weight -10
  }
  track_script {
    chk_web
  }
  notify_master "/bin/notify master"
  notify /bin/notify-all
}
vrrp_instance VI_2 {
  interface eth1
  virtual_router_id 52
  version 2
  advert_int 1
  nopreempt
  authentication {
    auth_type PASS
    auth_pass secret12
  }
  virtual_ipaddress {
    198.51.100.254/24
  }
  garp_master_delay 0
  garp_master_repeat 1
  garp_master_refresh 0
  garp_master_refresh_repeat 1
  garp_lower_prio_repeat 1
}
vrrp_sync_group G1 {
  group {
    VI_1
    VI_2
  }
  notify_backup /bin/g-backup
}
"#;

#[test]
fn every_key_maps_onto_the_keepalived_model() {
    let (c, warnings) = yaml(FULL);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(c.heartbeat.is_none());
    assert_eq!(
        without_origins(c.keepalived.clone()),
        without_origins(keepalived(FULL_CONF))
    );
    let v = &c.keepalived.vrrp;
    let i = &v.instances[0];
    assert_eq!(i.origin.1, 18, "an instance names its YAML line");
    assert_eq!((i.vrid, i.priority, i.version), (51, 150, Version::V3));
    assert_eq!(i.advert_int, Duration::from_millis(50));
    assert_eq!(i.initial, InitialState::Master);
    assert_eq!(i.track_scripts[0].weight, -30, "the script's weight");
    assert_eq!(i.track_interfaces[1].weight, -10);
    assert_eq!(i.garp.refresh, Some(Duration::from_secs(60)));
    assert_eq!(v.instances[1].auth, Auth::pass("secret12"));
    assert!(!v.instances[1].preempt);
    assert_eq!(v.instances[1].garp.refresh, None);
    assert_eq!(v.scripts[0].timeout, Duration::from_millis(500));
    assert_eq!(v.group_indices(), vec![vec![0, 1]]);
}

#[test]
fn defaults_are_keepalived_defaults() {
    let (c, _) = yaml(
        "vrrp:\n  instances:\n    - { name: V, interface: eth0, virtual_router_id: 7, virtual_ipaddress: [192.0.2.10] }\n",
    );
    let conf = keepalived(
        "vrrp_instance V {\n interface eth0\n virtual_router_id 7\n virtual_ipaddress {\n 192.0.2.10\n }\n}\n",
    );
    assert_eq!(without_origins(c.keepalived), without_origins(conf));
}

#[test]
fn mistakes_are_refused_at_their_yaml_line() {
    let base = "vrrp:\n  instances:\n    - name: V\n      interface: eth0\n";
    let e = errors(&format!(
        "{base}      virtual_router_id: 300\n      virtual_ipaddress: [192.0.2.10]\n"
    ));
    assert!(
        e.iter()
            .any(|m| m.starts_with("hbd.yaml:5: virtual_router_id 300: use 1 to 255")),
        "{e:?}"
    );
    let e = errors(&format!(
        "{base}      virtual_router_id: 1\n      advert_int: 0.05\n      virtual_ipaddress: [192.0.2.10]\n"
    ));
    assert!(
        e.iter()
            .any(|m| m.starts_with("hbd.yaml:6: advert_int 0.05: VRRPv2 carries whole seconds")),
        "{e:?}"
    );
    let e = errors(&format!(
        "{base}      virtual_router_id: 1\n      advert_int: soon\n      virtual_ipaddress: [192.0.2.10]\n"
    ));
    assert!(
        e.iter().any(|m| m
            .starts_with("hbd.yaml:6: vrrp instance V: advert_int: 'soon' is not a time value")),
        "{e:?}"
    );
    let e = errors(&format!(
        "{base}      virtual_router_id: 1\n      virtual_ipaddress: [192.0.2.10]\n      unicast_peer: []\n"
    ));
    assert!(
        e.iter()
            .any(|m| m.starts_with("hbd.yaml:7: ") && m.contains("unicast_peer is empty")),
        "{e:?}"
    );
    // Unknown keys and missing required ones: serde-saphyr's line.
    let e = errors(&format!(
        "{base}      virtual_router_id: 1\n      virtual_ip: [192.0.2.10]\n"
    ));
    assert!(e[0].starts_with("hbd.yaml:"), "{e:?}");
    assert!(e[0].contains("virtual_ip"), "{e:?}");
    // Sync groups name defined instances.
    let e = errors(&format!(
        "{base}      virtual_router_id: 1\n      virtual_ipaddress: [192.0.2.10]\n  sync_groups:\n    - {{ name: G, group: [V, W] }}\n"
    ));
    assert!(
        e.iter()
            .any(|m| m.starts_with("hbd.yaml:8: ") && m.contains("names vrrp_instance W")),
        "{e:?}"
    );
    // No instance at all: the section's first line.
    let e = errors("vrrp:\n  router_id: x\n");
    assert!(
        e.iter()
            .any(|m| m.starts_with("hbd.yaml:2: vrrp has no instances")),
        "{e:?}"
    );
}

#[test]
fn heartbeat_keys_need_media_and_heartbeat_only_keys_are_refused() {
    let v = "vrrp:\n  instances: [ { name: V, interface: eth0, virtual_router_id: 1, virtual_ipaddress: [192.0.2.10] } ]\n";
    let e = errors(&format!(
        "{v}nodes: [lb1, lb2]\ngroups: [ {{ preferred: lb1, resources: [x] }} ]\n"
    ));
    assert!(
        e.iter()
            .any(|m| m.starts_with("hbd.yaml:3: `nodes` describes the heartbeat media")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("hbd.yaml:4: `groups` is not used")),
        "{e:?}"
    );
    // With media, the heartbeat configuration beside VRRP is built and validated.
    let (c, _) = yaml(&format!(
        "{v}nodes: [lb1, lb2]\ntiming: {{ keepalive: 100ms, deadtime: 500ms }}\nmedia: [ {{ ucast: {{ interface: eth1, peer: 198.51.100.2 }} }} ]\nauth: {{ keys: [ {{ id: 1, method: sha256, key: k }} ] }}\nlogging: {{ debug: 1 }}\n"
    ));
    let hb = c.heartbeat.expect("heartbeat beside VRRP");
    assert_eq!(hb.nodes, ["lb1", "lb2"]);
    assert!(hb.groups.is_empty());
    assert_eq!(c.logging.debug_level, 1);
}

#[test]
fn director_section_becomes_the_virtual_servers() {
    let (c, _) = yaml(
        "vrrp:\n  instances: [ { name: V, interface: eth0, virtual_router_id: 1, virtual_ipaddress: [192.0.2.10/24] } ]\ndirector:\n  virtual_services:\n    - virtual: 192.0.2.10:80\n      reals: [ { address: \"192.0.2.21:80\", forwarding: gate } ]\n      checktype: connect\n",
    );
    let d = c.keepalived.director.as_ref().expect("director");
    assert_eq!(d.virtuals.len(), 1);
    let groups = c.keepalived.resource_groups("lb1");
    assert_eq!(groups[0].resources.last().unwrap().kind, "ldirectord");
}

#[test]
fn durations_carry_exactly() {
    for (d, text) in [
        (Duration::from_millis(50), "0.05"),
        (Duration::from_secs(3), "3"),
        (Duration::from_micros(1_500_001), "1.500001"),
    ] {
        assert_eq!(seconds_text(d), text);
    }
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keepalived")
        .join(rel)
}

/// Every seed keepalived.conf → YAML → the same model as loading the keepalived.conf.
#[test]
fn seeds_convert_to_yaml_and_load_back_to_the_same_model() {
    for rel in [
        "001/node1.conf",
        "001/node2.conf",
        "002/master.conf",
        "002/backup.conf",
        "003/ka01/keepalived.conf",
        "003/ka02/keepalived.conf",
        "003/ka01-tcp/keepalived.conf",
        "003/ka01-fwmark/keepalived.conf",
        "003/sync/keepalived.conf",
    ] {
        let (direct, _) = load_keepalived(&fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let text = keepalived_to_yaml(&direct).expect("writes");
        let (back, warnings) = load_yaml_vrrp_str(&text, Path::new("hbd.yaml"), "lb1")
            .unwrap_or_else(|e| panic!("{rel}: the YAML does not load:\n{e}\n{text}"));
        assert!(
            warnings.iter().all(|w| w.severity != Severity::Error),
            "{rel}: {warnings:?}"
        );
        assert_eq!(
            without_origins(back.keepalived.clone()),
            without_origins(direct.clone()),
            "{rel}:\n{text}"
        );
        assert_eq!(
            back.keepalived.resource_groups("lb1"),
            direct.resource_groups("lb1"),
            "{rel}"
        );
    }
}
