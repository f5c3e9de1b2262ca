//! The default locations every program agrees on, and how the environment overrides them.
//!
//! Invariant: a variable that is set but empty means its default, as an unset one does.

use std::path::PathBuf;

/// `HERMES_HOME`: the volume.
pub const DEFAULT_HOME: &str = "/opt/data";
/// `HERMES_INIT_SCAN_DIR`: the slot directories.
pub const DEFAULT_SCAN_DIR: &str = "/run/service";
/// `HERMES_INIT_RUNTIME_DIR`: the control and health sockets.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/hermes-init";
/// `HERMES_INIT_CONT_INIT_DIR`: the boot hooks.
pub const DEFAULT_CONT_INIT_DIR: &str = "/etc/cont-init.d";

/// The directory named by `variable`, or `default`.
pub fn dir_from(env: &impl Fn(&str) -> Option<String>, variable: &str, default: &str) -> PathBuf {
    env(variable).filter(|v| !v.is_empty()).unwrap_or_else(|| default.into()).into()
}

pub fn home(env: &impl Fn(&str) -> Option<String>) -> PathBuf {
    dir_from(env, "HERMES_HOME", DEFAULT_HOME)
}

pub fn scan_dir(env: &impl Fn(&str) -> Option<String>) -> PathBuf {
    dir_from(env, "HERMES_INIT_SCAN_DIR", DEFAULT_SCAN_DIR)
}

pub fn runtime_dir(env: &impl Fn(&str) -> Option<String>) -> PathBuf {
    dir_from(env, "HERMES_INIT_RUNTIME_DIR", DEFAULT_RUNTIME_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_empty_and_unset_variables() {
        let env = |name: &str| match name {
            "HERMES_HOME" => Some("/data".to_string()),
            "HERMES_INIT_SCAN_DIR" => Some(String::new()),
            _ => None,
        };
        assert_eq!(home(&env), PathBuf::from("/data"));
        assert_eq!(scan_dir(&env), PathBuf::from(DEFAULT_SCAN_DIR));
        assert_eq!(runtime_dir(&env), PathBuf::from(DEFAULT_RUNTIME_DIR));
    }
}
