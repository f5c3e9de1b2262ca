//! Signals by number and by name (Linux numbering), and the one parser every entry point
//! uses: the control socket, `hermesctl signal`, a slot's `down-signal` file.
//!
//! Invariant: `parse` accepts a name with or without `SIG` in any case (`TERM`, `sigterm`),
//! a number from 1 to 64 (`10`), or a real-time signal as `RTMIN+N`/`RTMAX-N`, and nothing
//! else; a number outside 1..=64 is refused, never passed to kill(2).

pub const HUP: i32 = 1;
pub const INT: i32 = 2;
pub const QUIT: i32 = 3;
pub const KILL: i32 = 9;
pub const USR1: i32 = 10;
pub const USR2: i32 = 12;
pub const TERM: i32 = 15;
pub const CHLD: i32 = 17;
pub const CONT: i32 = 18;
pub const WINCH: i32 = 28;

/// Signals that concern the init itself and are never forwarded: faults raised by its own
/// code (ILL, TRAP, ABRT, BUS, FPE, SEGV, SYS), the two that cannot be caught (KILL, STOP),
/// and CHLD, which is the reaper's.
pub const NOT_FORWARDED: [i32; 10] = [4, 5, 6, 7, 8, 11, 31, KILL, 19, CHLD];
/// glibc keeps 32 and 33 for its threads: no handler can be installed for them.
pub const RESERVED: [i32; 2] = [32, 33];

/// Whether a signal that reaches the init is passed on to the main command (as tini and
/// dumb-init do: every catchable signal but the ones that concern the init itself). SIGTERM
/// is passed on by the shutdown, which it starts.
pub fn forwarded(signal: i32) -> bool {
    (1..=MAX).contains(&signal) && !NOT_FORWARDED.contains(&signal) && !RESERVED.contains(&signal)
}

/// Every signal the init installs a handler for: the forwarded ones and CHLD.
pub fn handled() -> impl Iterator<Item = i32> {
    (1..=MAX).filter(|s| forwarded(*s) || *s == CHLD)
}

/// The highest signal number on Linux (`SIGRTMAX` as the kernel counts).
pub const MAX: i32 = 64;
/// glibc reserves 32 and 33 for itself, so `SIGRTMIN` as programs see it is 34.
pub const RTMIN: i32 = 34;

/// The standard signals by number (Linux x86 and arm numbering, signal(7)).
const NAMES: [(i32, &str); 31] = [
    (1, "HUP"),
    (2, "INT"),
    (3, "QUIT"),
    (4, "ILL"),
    (5, "TRAP"),
    (6, "ABRT"),
    (7, "BUS"),
    (8, "FPE"),
    (9, "KILL"),
    (10, "USR1"),
    (11, "SEGV"),
    (12, "USR2"),
    (13, "PIPE"),
    (14, "ALRM"),
    (15, "TERM"),
    (16, "STKFLT"),
    (17, "CHLD"),
    (18, "CONT"),
    (19, "STOP"),
    (20, "TSTP"),
    (21, "TTIN"),
    (22, "TTOU"),
    (23, "URG"),
    (24, "XCPU"),
    (25, "XFSZ"),
    (26, "VTALRM"),
    (27, "PROF"),
    (28, "WINCH"),
    (29, "IO"),
    (30, "PWR"),
    (31, "SYS"),
];

/// Aliases that name the same number.
const ALIASES: [(&str, i32); 4] = [("IOT", 6), ("CLD", 17), ("POLL", 29), ("UNUSED", 31)];

/// Parses a signal given by name or number; `None` for anything else.
pub fn parse(text: &str) -> Option<i32> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<i32>().ok().filter(|n| (1..=MAX).contains(n));
    }
    let upper = text.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(number, _)) = NAMES.iter().find(|(_, name)| *name == bare) {
        return Some(number);
    }
    if let Some(&(_, number)) = ALIASES.iter().find(|(name, _)| *name == bare) {
        return Some(number);
    }
    let offset = |rest: &str| -> Option<i32> { if rest.is_empty() { Some(0) } else { rest.parse().ok() } };
    let number = if let Some(rest) = bare.strip_prefix("RTMIN") {
        RTMIN + offset(rest.strip_prefix('+').unwrap_or(rest))?
    } else if let Some(rest) = bare.strip_prefix("RTMAX") {
        MAX - offset(rest.strip_prefix('-').unwrap_or(rest))?
    } else {
        return None;
    };
    (RTMIN..=MAX).contains(&number).then_some(number)
}

/// A readable name for log lines: `SIGTERM`, `SIGRTMIN+2`, or `signal N`.
pub fn name(signal: i32) -> String {
    match NAMES.iter().find(|(number, _)| *number == signal) {
        Some((_, name)) => format!("SIG{name}"),
        None if (RTMIN..=MAX).contains(&signal) => format!("SIGRTMIN+{}", signal - RTMIN),
        None => format!("signal {signal}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_to_one_number() {
        let cases = [
            ("TERM", Some(15)),
            ("SIGTERM", Some(15)),
            ("sigterm", Some(15)),
            (" term\n", Some(15)),
            ("15", Some(15)),
            ("10", Some(10)),
            ("1", Some(1)),
            ("64", Some(64)),
            ("USR1", Some(10)),
            ("hup", Some(1)),
            ("SIGKILL", Some(9)),
            ("TTIN", Some(21)),
            ("IOT", Some(6)),
            ("RTMIN", Some(34)),
            ("SIGRTMIN+3", Some(37)),
            ("RTMAX", Some(64)),
            ("RTMAX-1", Some(63)),
            ("0", None),
            ("65", None),
            ("-1", None),
            ("+5", None),
            ("99999999999", None),
            ("NOPE", None),
            ("SIG", None),
            ("", None),
            ("RTMIN+31", None),
            ("RTMAX-31", None),
            ("RTMINX", None),
            ("1.5", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), want, "{text:?}");
        }
    }

    #[test]
    fn the_forwarding_table() {
        // (signal, forwarded)
        let cases = [
            (HUP, true),
            (INT, true),
            (QUIT, true),
            (USR1, true),
            (USR2, true),
            (13, true), // PIPE, sent by kill(1)
            (14, true), // ALRM
            (TERM, true),
            (CONT, true),
            (20, true), // TSTP
            (21, true), // TTIN: gunicorn adds a worker
            (22, true), // TTOU: gunicorn removes one
            (WINCH, true),
            (30, true), // PWR
            (34, true), // RTMIN
            (64, true), // RTMAX
            (KILL, false),
            (19, false), // STOP
            (CHLD, false),
            (11, false), // SEGV
            (4, false),  // ILL
            (6, false),  // ABRT
            (7, false),  // BUS
            (8, false),  // FPE
            (5, false),  // TRAP
            (31, false), // SYS
            (32, false),
            (33, false),
            (0, false),
            (65, false),
        ];
        for (signal, want) in cases {
            assert_eq!(forwarded(signal), want, "{}", name(signal));
        }
        assert!(handled().any(|s| s == CHLD));
        assert_eq!(handled().count(), 64 - 10 - 2 + 1);
    }

    #[test]
    fn names_for_log_lines() {
        assert_eq!(name(15), "SIGTERM");
        assert_eq!(name(10), "SIGUSR1");
        assert_eq!(name(36), "SIGRTMIN+2");
        assert_eq!(name(0), "signal 0");
        for n in 1..=31 {
            assert_eq!(parse(&name(n)), Some(n), "{n}");
        }
    }
}
