//! The programs' own log: `tracing` events to stderr, one line each. As text, each line is
//! prefixed `[hermes-init]` so a reader of `docker logs` can tell the init's lines from the
//! services' output, and a `slot` field leads the message (`slot web: started (pid 7)`).
//! With `HERMES_INIT_LOG_FORMAT=json` each line is one JSON object: `time`, `level`,
//! `message` and every structured field (`slot`, ...), the same format as service lines.
//!
//! Invariant: a log line is one line: newlines inside a message or a field are escaped.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The line prefix of every text log line of the init.
pub const PREFIX: &str = "[hermes-init]";

/// How the lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The fields of one event, in the order they were recorded.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Map<String, Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.rest.insert(field.name().to_string(), Value::String(value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.rest.insert(field.name().to_string(), Value::String(format!("{value:?}")));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.rest.insert(field.name().to_string(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.rest.insert(field.name().to_string(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.rest.insert(field.name().to_string(), Value::Bool(value));
    }
}

struct Line(LogFormat);

/// The text form: `[hermes-init] warning: slot web: message key=value`.
fn text_line(level: Level, fields: &Fields) -> String {
    let tag = match level {
        Level::ERROR => "error: ",
        Level::WARN => "warning: ",
        Level::INFO => "",
        Level::DEBUG => "debug: ",
        Level::TRACE => "trace: ",
    };
    let mut line = format!("{PREFIX} {tag}");
    let mut rest = fields.rest.clone();
    if let Some(Value::String(slot)) = rest.remove("slot") {
        line.push_str(&format!("slot {slot}: "));
    }
    line.push_str(&fields.message);
    for (key, value) in rest {
        match value {
            Value::String(text) => line.push_str(&format!(" {key}={text}")),
            other => line.push_str(&format!(" {key}={other}")),
        }
    }
    line.replace('\n', "\\n").replace('\r', "\\r")
}

fn json_line(level: Level, fields: Fields) -> String {
    let mut object = Map::new();
    object.insert("time".into(), Value::String(crate::sys::files::utc_timestamp()));
    object.insert("level".into(), Value::String(level.as_str().to_ascii_lowercase()));
    object.insert("source".into(), Value::String("hermes-init".into()));
    object.insert("message".into(), Value::String(fields.message));
    object.extend(fields.rest);
    Value::Object(object).to_string()
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let level = *event.metadata().level();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = match self.0 {
            LogFormat::Text => text_line(level, &fields),
            LogFormat::Json => json_line(level, fields),
        };
        writeln!(writer, "{line}")
    }
}

/// Installs the stderr logger at `level`. Safe to call more than once (later calls are no-ops).
pub fn init(level: Level, format: LogFormat) {
    init_with(level, format, std::io::stderr);
}

/// The same, writing each line through `writer` (the reaper's non-blocking sink).
pub fn init_with<W>(level: Level, format: LogFormat, writer: W)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let _ = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_max_level(level)
        .with_ansi(false)
        .event_format(Line(format))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(message: &str, rest: &[(&str, Value)]) -> Fields {
        Fields { message: message.into(), rest: rest.iter().map(|(k, v)| (k.to_string(), v.clone())).collect() }
    }

    #[test]
    fn text_lines() {
        let cases = [
            (
                Level::INFO,
                fields("started (pid 7)", &[("slot", "web".into())]),
                "[hermes-init] slot web: started (pid 7)",
            ),
            (Level::WARN, fields("odd", &[("code", 3.into())]), "[hermes-init] warning: odd code=3"),
            (Level::ERROR, fields("two\nlines", &[]), "[hermes-init] error: two\\nlines"),
        ];
        for (level, fields, want) in cases {
            assert_eq!(text_line(level, &fields), want);
        }
    }

    #[test]
    fn json_lines_carry_every_field() {
        let line = json_line(Level::WARN, fields("cannot start", &[("slot", "web".into())]));
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["level"], "warn");
        assert_eq!(value["message"], "cannot start");
        assert_eq!(value["slot"], "web");
        assert!(value["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(!line.contains('\n'));
    }
}
