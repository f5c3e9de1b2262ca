//! hermes-init: a container init for multi-profile agent gateways.
//!
//! The library holds all the logic; the binaries in `src/bin/` are thin entry points.
//! `core` is pure (decisions from events and time), `sys` is the only place that touches
//! the operating system's process and signal calls, and `runtime` is the one-threaded
//! event loop that joins them.

pub mod config;
pub mod cont_init;
pub mod control;
pub mod core;
pub mod ctl;
pub mod ctl_gateway;
pub mod health;
pub mod hooks;
pub mod logging;
pub mod logs;
pub mod profile;
pub mod runtime;
pub mod slotdir;
pub mod supervisor;
pub mod sys;
