//! What a failed boot hook means for the container, by `HERMES_INIT_BEHAVIOUR_IF_HOOK_FAILS`
//! (the values follow s6-overlay's `S6_BEHAVIOUR_IF_STAGE2_FAILS`: 0 go on, 1 warn, 2 stop).

use super::exit::ExitStatus;

/// The configured reaction to a failed hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HookFailurePolicy {
    /// `0`: log the failure and go on (the default).
    #[default]
    Continue,
    /// `1`: log a warning banner and go on.
    Warn,
    /// `2`: stop the container with the hook's exit code.
    Stop,
}

impl HookFailurePolicy {
    /// Parses the environment value `0`, `1` or `2`.
    pub fn parse(value: &str) -> Option<HookFailurePolicy> {
        match value.trim() {
            "0" => Some(HookFailurePolicy::Continue),
            "1" => Some(HookFailurePolicy::Warn),
            "2" => Some(HookFailurePolicy::Stop),
            _ => None,
        }
    }
}

/// What the boot does after one hook ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookVerdict {
    /// Success, or a failure the policy lets pass quietly: run the next hook.
    Next,
    /// A failure to shout about, then run the next hook.
    NextWithBanner,
    /// Stop the container with this exit code.
    StopContainer(i32),
}

/// The verdict for a hook that ended with `status` under `policy`.
pub fn verdict(policy: HookFailurePolicy, status: ExitStatus) -> HookVerdict {
    if status.success() {
        return HookVerdict::Next;
    }
    match policy {
        HookFailurePolicy::Continue => HookVerdict::Next,
        HookFailurePolicy::Warn => HookVerdict::NextWithBanner,
        HookFailurePolicy::Stop => HookVerdict::StopContainer(status.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HookFailurePolicy::*;
    use HookVerdict::*;

    #[test]
    fn verdict_table() {
        let cases = [
            (Continue, ExitStatus::Code(0), Next),
            (Warn, ExitStatus::Code(0), Next),
            (Stop, ExitStatus::Code(0), Next),
            (Continue, ExitStatus::Code(3), Next),
            (Warn, ExitStatus::Code(3), NextWithBanner),
            (Stop, ExitStatus::Code(3), StopContainer(3)),
            (Stop, ExitStatus::Signaled(9), StopContainer(137)),
            (Warn, ExitStatus::Signaled(15), NextWithBanner),
        ];
        for (policy, status, want) in cases {
            assert_eq!(verdict(policy, status), want, "{policy:?} {status}");
        }
    }

    #[test]
    fn policy_values() {
        let cases = [
            ("0", Some(Continue)),
            ("1", Some(Warn)),
            ("2", Some(Stop)),
            (" 2 ", Some(Stop)),
            ("3", None),
            ("", None),
            ("yes", None),
        ];
        for (text, want) in cases {
            assert_eq!(HookFailurePolicy::parse(text), want, "{text:?}");
        }
    }
}
