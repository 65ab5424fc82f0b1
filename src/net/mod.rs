//! Kernel networking at the edge: rtnetlink addresses and routes, gratuitous ARP, unsolicited NA, sysctl.
