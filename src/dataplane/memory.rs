//! An in-memory dataplane for the simulation and tests: no kernel, every change recorded.

use super::diff::{Change, apply_changes};
use super::model::VirtualService;
use super::reconcile::{Dataplane, DataplaneError};

/// An in-memory dataplane that records every change: for simulation and tests.
#[derive(Debug, Clone, Default)]
pub struct MemoryDataplane {
    /// The current services.
    pub services: Vec<VirtualService>,
    /// Every change ever applied, in order.
    pub log: Vec<Change>,
}

impl Dataplane for MemoryDataplane {
    async fn list(&mut self) -> Result<Vec<VirtualService>, DataplaneError> {
        Ok(self.services.clone())
    }

    async fn apply(&mut self, changes: &[Change]) -> Result<(), DataplaneError> {
        let mut next = self.services.clone();
        apply_changes(&mut next, changes)?;
        self.services = next;
        self.log.extend_from_slice(changes);
        Ok(())
    }
}
