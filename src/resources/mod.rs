//! Resources: ordered groups of VIPs, scripts (heartbeat resource.d, LSB, OCF) and built-ins.
