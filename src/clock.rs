//! The one place hbd reads a clock (`clippy.toml` bans the reads everywhere else).
//!
//! Everything that measures or schedules uses tokio's clock through [`now`], so a test can
//! pause it (`tokio::time::pause`, `start_paused = true`) and a whole cluster runs in the
//! simulation exactly as it runs for real. Wall-clock time ([`wall`]) is only for what leaves
//! the process: timestamps in frames, files and logs.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// The current instant on tokio's clock (paused in tests that pause it).
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

/// Time since `earlier` on tokio's clock; zero when `earlier` is not in the past.
pub fn since(earlier: Instant) -> Duration {
    now().saturating_duration_since(earlier)
}

/// The wall-clock time, for timestamps other hosts or files read.
#[allow(clippy::disallowed_methods)]
pub fn wall() -> SystemTime {
    SystemTime::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn now_follows_the_paused_clock() {
        let t0 = now();
        tokio::time::advance(Duration::from_millis(30)).await;
        assert_eq!(since(t0), Duration::from_millis(30));
        assert_eq!(since(now() + Duration::from_secs(1)), Duration::ZERO);
    }
}
