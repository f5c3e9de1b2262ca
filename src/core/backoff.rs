//! Restart spacing for a supervised slot: exponential backoff with a floor between spawns.
//!
//! Invariants: the k-th restart after deaths in quick succession waits 0.5 s * 2^(k-1),
//! capped at 30 s; no two spawns of one slot are ever less than 1 s apart; a service that
//! ran for at least that second before it died is restarted at once and starts over at the
//! first step (the slot machine decides that; this module only computes the spacing).

use std::time::{Duration, Instant};

/// The first restart delay.
pub const BASE: Duration = Duration::from_millis(500);
/// The largest restart delay.
pub const CAP: Duration = Duration::from_secs(30);
/// The shortest time between two spawns of one slot.
pub const MIN_SPAWN_SPACING: Duration = Duration::from_secs(1);

/// The delay before the `attempt`-th consecutive restart (1-based; 0 means no delay).
pub fn delay(attempt: u32) -> Duration {
    if attempt == 0 {
        return Duration::ZERO;
    }
    let factor = 1u64 << (attempt - 1).min(16);
    BASE.saturating_mul(factor as u32).min(CAP)
}

/// When the next spawn may happen, after a death at `died` that is the `attempt`-th
/// consecutive one, with the previous spawn at `last_spawn`.
pub fn next_spawn(died: Instant, attempt: u32, last_spawn: Option<Instant>) -> Instant {
    let by_backoff = died + delay(attempt);
    match last_spawn {
        Some(at) => by_backoff.max(at + MIN_SPAWN_SPACING),
        None => by_backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_table() {
        let ms = Duration::from_millis;
        let cases = [
            (0, ms(0)),
            (1, ms(500)),
            (2, ms(1000)),
            (3, ms(2000)),
            (4, ms(4000)),
            (6, ms(16000)),
            (7, CAP),
            (40, CAP),
        ];
        for (attempt, want) in cases {
            assert_eq!(delay(attempt), want, "attempt {attempt}");
        }
    }

    #[test]
    fn spawns_are_never_closer_than_one_second() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // (died, attempt, last spawn, next spawn)
        let cases = [
            (ms(100), 1, Some(ms(0)), ms(1000)),
            (ms(5000), 1, Some(ms(0)), ms(5500)),
            (ms(5000), 3, Some(ms(4900)), ms(7000)),
            (ms(200), 0, Some(ms(100)), ms(1100)),
            (ms(200), 0, None, ms(200)),
        ];
        for (died, attempt, last, want) in cases {
            assert_eq!(next_spawn(died, attempt, last), want, "{died:?} {attempt}");
        }
    }
}
