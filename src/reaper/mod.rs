//! `hermes-reaper`, the container's PID 1: its configuration, the event loop, and what the
//! loop serves — the slot supervisor, the control socket, the health API, service output,
//! the boot hooks — plus the one adapter through which the supervisor meets gateways.
//!
//! Invariant: nothing here blocks the loop, and nothing here ends PID 1 but the lifecycle's
//! own verdict (or a failure to set up the signal pipe at start).

pub mod checks;
pub mod config;
pub mod conn;
pub mod control;
pub mod discovery;
pub mod event_loop;
pub mod gateway;
pub mod health;
pub mod hooks;
pub mod output;
pub mod sink;
pub mod slotdir;
pub mod supervisor;

pub use event_loop::run;
