//! Root end-to-end tests in network namespaces. They fail loudly when not run as root.

mod checks;
mod cli;
mod cluster;
mod control;
mod dataplane;
mod director;
mod failover;
mod media;
mod net;
mod netns;
mod web;
