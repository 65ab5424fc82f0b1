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
    let memory_locked = nix::sys::mman::mlockall(
        nix::sys::mman::MlockAllFlags::MCL_CURRENT | nix::sys::mman::MlockAllFlags::MCL_FUTURE,
    )
    .map_err(|e| e.to_string());
    RealtimeOutcome {
        scheduler,
        memory_locked,
    }
}
