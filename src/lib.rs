//! hermes-init: a container init for multi-profile agent gateways.
//!
//! Three programs on a shared core. `core` is pure (decisions from events and time),
//! `sys` is the only place that touches the operating system's process, signal and file
//! calls, `proto` holds the wire types server and clients share, and `volume` everything
//! that knows `HERMES_HOME`. On top of them: `reaper` (PID 1), `cont_init` (the boot hook)
//! and `ctl` (`hermesctl`); the binaries in `src/bin/` are thin entry points.
//!
//! Dependencies point one way: the programs use the shared modules, never each other,
//! except `ctl`, which runs the boot pass's slot writer for `profile create`.

pub mod cont_init;
pub mod core;
pub mod ctl;
pub mod fuzz;
pub mod logging;
pub mod proto;
pub mod reaper;
pub mod sys;
pub mod volume;

/// The command-line arguments after the program name, which must be UTF-8 (tool names,
/// slot and profile names, paths given to the tools); on failure, the line for stderr.
pub fn utf8_args(tool: &str) -> Result<Vec<String>, String> {
    std::env::args_os()
        .skip(1)
        .map(|a| a.into_string().map_err(|bad| format!("{tool}: argument is not UTF-8: {bad:?}")))
        .collect()
}
