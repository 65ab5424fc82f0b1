//! Dataplane: desired virtual services vs what the kernel has, applied through IPVS or nftables.
