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

/// The command-line arguments after the program name, which must be UTF-8 (tool names,
/// slot and profile names, paths given to the tools); on failure, the line for stderr.
pub fn utf8_args(tool: &str) -> Result<Vec<String>, String> {
    std::env::args_os()
        .skip(1)
        .map(|a| a.into_string().map_err(|bad| format!("{tool}: argument is not UTF-8: {bad:?}")))
        .collect()
}
