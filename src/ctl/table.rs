//! The tables `hermesctl status` prints.
//!
//! Invariant: the failure reason is the last column, cut to the terminal width, so one
//! long reason never pads every row.

use crate::core::slot::StateName;
use crate::proto::status::SlotStatus;

/// The slot table, one row per slot; `width` is the terminal width if known.
pub fn status_table(slots: &[SlotStatus], now: f64, width: Option<usize>) -> String {
    let mut rows = vec![
        ["SLOT", "STATE", "PID", "UPTIME", "RESTARTS", "WANTED", "LAST EXIT", "REASON"].map(String::from).to_vec(),
    ];
    for slot in slots {
        let running = matches!(slot.state, StateName::Starting | StateName::Up);
        let uptime = if running { human_duration((now - slot.since).max(0.0)) } else { "-".into() };
        rows.push(vec![
            slot.slot.clone(),
            slot.state.as_str().to_string(),
            slot.pid.map_or("-".into(), |p| p.to_string()),
            uptime,
            slot.restarts.to_string(),
            match slot.wanted {
                crate::proto::status::Wanted::Up => "up".into(),
                crate::proto::status::Wanted::Down => "down".into(),
            },
            slot.last_exit.map_or("-".into(), |e| e.to_string()),
            reason(slot),
        ]);
    }
    render_table(&rows, width)
}

/// Why a slot is not as wanted: its failure, else its first failing check.
fn reason(slot: &SlotStatus) -> String {
    if let Some(failure) = &slot.failure {
        return failure.clone();
    }
    slot.checks
        .iter()
        .find(|c| c.state == "failing")
        .map(|c| format!("check {} failing ({}): {}", c.check, c.failures, c.last_error.as_deref().unwrap_or("-")))
        .unwrap_or_default()
}

/// The gateway table: one row per gateway slot.
pub fn gateway_table(slots: &[SlotStatus], width: Option<usize>) -> String {
    let mut rows =
        vec![["PROFILE", "STATE", "PID", "DESIRED", "GATEWAY_STATE", "EXIT_REASON"].map(String::from).to_vec()];
    for slot in slots {
        let Some(gateway) = &slot.gateway else { continue };
        let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        rows.push(vec![
            gateway.profile.clone(),
            slot.state.as_str().to_string(),
            slot.pid.map_or("-".into(), |p| p.to_string()),
            text(&gateway.desired_state),
            text(&gateway.gateway_state),
            text(&gateway.exit_reason),
        ]);
    }
    render_table(&rows, width)
}

/// Rows as left-aligned columns two spaces apart; the last column is not padded and is cut
/// so that a row fits in `width` columns.
pub fn render_table(rows: &[Vec<String>], width: Option<usize>) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        let mut line = line.trim_end().to_string();
        if let Some(width) = width.filter(|w| line.chars().count() > *w && *w > 1) {
            line = line.chars().take(width - 1).collect::<String>() + "…";
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

pub fn human_duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::status::{LastExit, Wanted};

    #[test]
    fn durations() {
        let cases = [(0.0, "0s"), (59.9, "59s"), (61.0, "1m1s"), (3601.0, "1h0m"), (90000.0, "1d1h")];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want);
        }
    }

    fn slot(name: &str, state: StateName, failure: Option<&str>) -> SlotStatus {
        SlotStatus {
            slot: name.into(),
            path: String::new(),
            loaded_at: 0,
            state,
            wanted: Wanted::Up,
            pid: Some(12),
            since: 100.0,
            ready: true,
            restarts: 2,
            last_exit: Some(LastExit::Signal(9)),
            failure: failure.map(str::to_string),
            gateway: None,
            checks: Vec::new(),
        }
    }

    #[test]
    fn table_rows_put_the_reason_last_and_cut_it() {
        let long = "crash loop: ".to_string() + &"x".repeat(200);
        let slots = vec![slot("a", StateName::Up, None), slot("bb", StateName::Failed, Some(&long))];
        let table = status_table(&slots, 130.0, Some(80));
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("SLOT  STATE"), "{table}");
        assert!(lines[1].contains("a ") && lines[1].contains("12") && lines[1].contains("30s"), "{table}");
        assert!(lines[1].contains("signal 9"), "{table}");
        assert!(lines[1].chars().count() < 70, "a row without a reason is not padded: {:?}", lines[1]);
        assert!(lines[2].contains("failed  ") && lines[2].contains("crash loop"), "{table}");
        assert_eq!(lines[2].chars().count(), 80, "cut to the width: {:?}", lines[2]);
        let uncut = status_table(&slots, 130.0, None);
        assert!(uncut.contains(&long));
    }
}
