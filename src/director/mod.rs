//! The director: ldirectord-style real-server health checks and the weights they imply.

pub mod checks;
pub mod health;
pub mod ping;
pub mod scheduler;
