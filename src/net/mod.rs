//! Kernel networking at the edge: rtnetlink addresses and routes, gratuitous ARP, unsolicited NA, sysctl.
//!
//! Nothing here decides anything; the resource layer calls in. No code in hbd shells out to
//! `ip`: addresses and routes go through [`addr::Netlink`], announcements through raw sockets.

pub mod addr;
pub mod arp;
pub mod ndisc;
pub mod sysctl;

pub use addr::{AddOutcome, DelOutcome, InterfaceAddress, LinkInfo, NetError, Netlink};
