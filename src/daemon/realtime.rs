//! Realtime scheduling and locked memory, as heartbeat's `realtime on` (its default).
//!
//! At keepalive 10 ms / deadtime 30 ms a heartbeat sent 20 ms late is a false failover. Under
//! SCHED_FIFO the daemon runs as soon as its timer fires even when every core is busy, and
//! with its pages locked it never waits for swap. `SCHED_RESET_ON_FORK` makes resource
//! scripts it starts run as ordinary processes.

/// Realtime priority used (heartbeat picks the middle of the SCHED_FIFO range).
pub const REALTIME_PRIORITY: i32 = 40;

/// What could be set up; failures are reported, not fatal (containers often forbid both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealtimeOutcome {
    /// Whether SCHED_FIFO was set.
    pub scheduler: Result<(), String>,
    /// Whether memory was locked.
    pub memory_locked: Result<(), String>,
}

/// Switches the calling process (all its threads created afterwards inherit it) to
/// SCHED_FIFO at [`REALTIME_PRIORITY`] and locks its memory.
pub fn enable() -> RealtimeOutcome {
    let param = nix::libc::sched_param {
        sched_priority: REALTIME_PRIORITY,
    };
    // SAFETY: sched_setscheduler reads one valid, initialised sched_param; pid 0 is this
    // process. It has no other memory effects.
    let rc = unsafe {
        nix::libc::sched_setscheduler(
            0,
            nix::libc::SCHED_FIFO | nix::libc::SCHED_RESET_ON_FORK,
            &param,
        )
    };
    let scheduler = if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    };
    // MCL_ONFAULT: lock pages as they are touched rather than every mapped page at once,
    // so the resident size stays what the daemon uses (~7 MB, not ~12 MB).
    // nix has no MCL_ONFAULT (Linux 4.4+, value 4 in <sys/mman.h>).
    const MCL_ONFAULT: nix::libc::c_int = 4;
    // SAFETY: mlockall takes flags only and touches no memory of ours.
    let rc = unsafe {
        nix::libc::mlockall(nix::libc::MCL_CURRENT | nix::libc::MCL_FUTURE | MCL_ONFAULT)
    };
    let memory_locked = if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    };
    RealtimeOutcome {
        scheduler,
        memory_locked,
    }
}
