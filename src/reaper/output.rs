//! Service output: each slot's stdout and stderr arrive through pipes, are split into
//! lines and passed to the init's stdout (prefixed `[slot] `, or as JSON); gateway slots'
//! lines also go to their log on the volume (`volume::gateway_log`).
//!
//! Invariants: a line longer than 64 KiB is cut and marked, never buffered without bound;
//! bytes that are not UTF-8 are replaced, never dropped with their line; one read per
//! pipe per loop turn is capped, so a flooding service cannot starve the others.

use serde_json::json;

/// Lines are cut at this length.
pub const MAX_LINE: usize = 64 * 1024;
/// The most bytes read from one pipe in one loop turn.
pub const READ_BUDGET: usize = 64 * 1024;
/// The mark appended to a cut line.
pub const CUT_MARK: &str = " [line cut at 64 KiB]";

/// How service lines are written to the init's stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Prefixed,
    Plain,
    Json,
}

impl Format {
    /// From `HERMES_INIT_LOG_FORMAT` and `HERMES_INIT_LOG_PREFIX`.
    pub fn from_env(format: Option<&str>, prefix: Option<&str>) -> Result<Format, String> {
        let prefixed = match prefix.map(str::trim) {
            None | Some("1") => true,
            Some("0") => false,
            Some(other) => return Err(format!("HERMES_INIT_LOG_PREFIX must be 0 or 1, not '{other}'")),
        };
        match format.map(str::trim) {
            Some("json") => Ok(Format::Json),
            None | Some("text") | Some("") => Ok(if prefixed { Format::Prefixed } else { Format::Plain }),
            Some(other) => Err(format!("HERMES_INIT_LOG_FORMAT must be text or json, not '{other}'")),
        }
    }
}

/// Splits a byte stream into lines, cutting the overlong ones.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit(line, cut)` for every complete (or cut) line.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(&[u8], bool)) {
        while !data.is_empty() {
            match data.iter().position(|b| *b == b'\n') {
                Some(end) if self.partial.len() + end <= MAX_LINE => {
                    if self.partial.is_empty() {
                        emit(&data[..end], false);
                    } else {
                        self.partial.extend_from_slice(&data[..end]);
                        emit(&self.partial, false);
                        self.partial.clear();
                    }
                    data = &data[end + 1..];
                }
                _ => {
                    let room = MAX_LINE - self.partial.len();
                    let take = room.min(data.len());
                    self.partial.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.partial.len() == MAX_LINE {
                        emit(&self.partial, true);
                        self.partial.clear();
                    }
                }
            }
        }
    }

    /// End of stream: the last line without a newline, if any.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8], bool)) {
        if !self.partial.is_empty() {
            emit(&self.partial, false);
            self.partial.clear();
        }
    }
}

/// Renders one service line for the init's stdout.
pub fn render(format: Format, slot: &str, stream: &str, line: &[u8], cut: bool, time: &str) -> String {
    let mut text = String::from_utf8_lossy(line).into_owned();
    if cut {
        text.push_str(CUT_MARK);
    }
    match format {
        Format::Prefixed => format!("[{slot}] {text}\n"),
        Format::Plain => format!("{text}\n"),
        Format::Json => format!("{}\n", json!({"time": time, "slot": slot, "stream": stream, "message": text})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Lines = Vec<(Vec<u8>, bool)>;

    fn split(chunks: &[&[u8]]) -> Lines {
        let mut out = Vec::new();
        let mut splitter = LineSplitter::default();
        let mut emit = |line: &[u8], cut: bool| out.push((line.to_vec(), cut));
        for chunk in chunks {
            splitter.feed(chunk, &mut emit);
        }
        splitter.finish(&mut emit);
        out
    }

    #[test]
    fn line_table() {
        let long = vec![b'x'; MAX_LINE + 10];
        let cases: Vec<(Vec<&[u8]>, Lines)> = vec![
            (vec![b"a\nb\n"], vec![(b"a".to_vec(), false), (b"b".to_vec(), false)]),
            (vec![b"par", b"tial\nend"], vec![(b"partial".to_vec(), false), (b"end".to_vec(), false)]),
            (vec![b"\n\n"], vec![(vec![], false), (vec![], false)]),
            (vec![&long, b"\n"], vec![(vec![b'x'; MAX_LINE], true), (vec![b'x'; 10], false)]),
        ];
        for (chunks, want) in cases {
            assert_eq!(split(&chunks), want);
        }
    }

    #[test]
    fn rendering() {
        assert_eq!(render(Format::Prefixed, "s", "stdout", b"hi", false, "t"), "[s] hi\n");
        assert_eq!(render(Format::Plain, "s", "stdout", b"hi", false, "t"), "hi\n");
        assert_eq!(
            render(Format::Prefixed, "s", "stderr", b"\xffok", true, "t"),
            format!("[s] \u{fffd}ok{CUT_MARK}\n")
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(Format::Json, "s", "stderr", b"m", false, "t")).unwrap();
        assert_eq!(json, json!({"time": "t", "slot": "s", "stream": "stderr", "message": "m"}));
    }

    #[test]
    fn formats_from_env() {
        let cases = [
            (None, None, Ok(Format::Prefixed)),
            (None, Some("0"), Ok(Format::Plain)),
            (Some("json"), None, Ok(Format::Json)),
            (Some("text"), Some("1"), Ok(Format::Prefixed)),
        ];
        for (format, prefix, want) in cases {
            assert_eq!(Format::from_env(format, prefix), want);
        }
        assert!(Format::from_env(Some("xml"), None).unwrap_err().contains("HERMES_INIT_LOG_FORMAT"));
        assert!(Format::from_env(None, Some("yes")).unwrap_err().contains("HERMES_INIT_LOG_PREFIX"));
    }
}
