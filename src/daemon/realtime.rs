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

/// Gives the calling thread the scheduling policy and priority of the process's main thread.
///
/// `SCHED_RESET_ON_FORK` resets every new thread, not only child processes, to an ordinary
/// policy; the node thread, which sends and receives the heartbeats, calls this to run
/// realtime whenever the daemon does. Nothing changes when the main thread is ordinary.
pub fn follow_main_thread() -> Result<(), String> {
    let main = nix::unistd::getpid().as_raw();
    // SAFETY: sched_getscheduler takes a thread id and touches no memory of ours.
    let policy = unsafe { nix::libc::sched_getscheduler(main) };
    if policy < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    if policy & !nix::libc::SCHED_RESET_ON_FORK == nix::libc::SCHED_OTHER {
        return Ok(());
    }
    let mut param = nix::libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_getparam writes one sched_param into `param`, which is valid and
    // initialised.
    if unsafe { nix::libc::sched_getparam(main, &mut param) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: as in `enable`: pid 0 is the calling thread, `param` is valid.
    if unsafe { nix::libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}
