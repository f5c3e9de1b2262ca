//! A slot's `check` file: a JSON object, or an array of them, each one probe:
//! `{"http": "http://127.0.0.1:PORT/path"}` (a 2xx status passes), `{"tcp": "127.0.0.1:PORT"}`
//! (a connection passes) or `{"exec": ["cmd", "arg"]}` (exit 0 passes), with `level`
//! (`alive` [default] or `ready`), `period_ms` [10000], `timeout_ms` [3000], `threshold` [3]
//! consecutive failures, `start_delay_ms` [0] and `on_failure` (`restart`, the default for
//! `alive`; `none`).

use serde::{Deserialize, Serialize};

/// What a check decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Failing `threshold` times in a row restarts the slot (unless `on_failure` is `none`).
    Alive,
    /// Passing makes the slot ready.
    Ready,
}

/// What a failing `alive` check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    Restart,
    None,
}

/// The probe of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Host, port and path of an `http://` URL.
    Http {
        host: String,
        port: u16,
        path: String,
    },
    /// `host:port`.
    Tcp(String),
    Exec(Vec<String>),
}

/// One check, as its file says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    #[serde(default = "alive")]
    pub level: Level,
    #[serde(default = "period")]
    pub period_ms: u64,
    #[serde(default = "timeout")]
    pub timeout_ms: u64,
    #[serde(default = "threshold")]
    pub threshold: u32,
    #[serde(default)]
    pub start_delay_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
}

fn alive() -> Level {
    Level::Alive
}
fn period() -> u64 {
    10_000
}
fn timeout() -> u64 {
    3000
}
fn threshold() -> u32 {
    3
}

impl CheckSpec {
    /// The probe, or why the spec is not one.
    pub fn probe(&self) -> Result<Probe, String> {
        let probe = match (&self.http, &self.tcp, &self.exec) {
            (Some(url), None, None) => {
                let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?}: only http:// URLs"))?;
                let (authority, path) =
                    rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
                let (host, port) = match authority.rsplit_once(':') {
                    Some((host, port)) => (host, port.parse().map_err(|_| format!("{url:?}: bad port"))?),
                    None => (authority, 80),
                };
                if host.is_empty() {
                    return Err(format!("{url:?}: no host"));
                }
                Probe::Http { host: host.to_string(), port, path }
            }
            (None, Some(addr), None) => {
                let ok = addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                if !ok {
                    return Err(format!("{addr:?}: expected host:port"));
                }
                Probe::Tcp(addr.clone())
            }
            (None, None, Some(argv)) if !argv.is_empty() => Probe::Exec(argv.clone()),
            (None, None, Some(_)) => return Err("\"exec\" needs a command".into()),
            _ => return Err("a check has exactly one of \"http\", \"tcp\" or \"exec\"".into()),
        };
        if self.period_ms == 0 || self.timeout_ms == 0 || self.threshold == 0 {
            return Err("period_ms, timeout_ms and threshold must be above 0".into());
        }
        Ok(probe)
    }

    /// What a failing check does: `alive` checks restart unless told `none`.
    pub fn restarts(&self) -> bool {
        self.level == Level::Alive && self.on_failure != Some(OnFailure::None)
    }

    /// `http http://...`, `tcp host:port` or `exec cmd`, for status lines.
    pub fn describe(&self) -> String {
        match (&self.http, &self.tcp, &self.exec) {
            (Some(url), _, _) => format!("http {url}"),
            (_, Some(addr), _) => format!("tcp {addr}"),
            (_, _, Some(argv)) => format!("exec {}", argv.join(" ")),
            _ => "?".into(),
        }
    }
}

/// Parses a `check` file: one object or an array of them; the error says what is wrong.
pub fn parse(bytes: &[u8]) -> Result<Vec<CheckSpec>, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let specs: Vec<CheckSpec> = match value {
        serde_json::Value::Array(_) => serde_json::from_value(value).map_err(|e| e.to_string())?,
        serde_json::Value::Object(_) => vec![serde_json::from_value(value).map_err(|e| e.to_string())?],
        _ => return Err("a check is a JSON object, or an array of them".into()),
    };
    for spec in &specs {
        spec.probe()?;
    }
    Ok(specs)
}

/// A check's state, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStatus {
    pub check: String,
    pub level: Level,
    /// `pending` (not run yet), `passing` or `failing`.
    pub state: String,
    /// Failures in a row.
    pub failures: u32,
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_files() {
        let ok = [
            (r#"{"tcp": "127.0.0.1:80"}"#, 1),
            (r#"{"http": "http://127.0.0.1:9200/health", "level": "ready", "period_ms": 500}"#, 1),
            (r#"[{"exec": ["true"]}, {"tcp": "localhost:1", "on_failure": "none"}]"#, 2),
        ];
        for (text, n) in ok {
            assert_eq!(parse(text.as_bytes()).map(|v| v.len()), Ok(n), "{text}");
        }
        let bad = [
            ("", "not JSON"),
            ("7", "JSON object"),
            (r#"{}"#, "exactly one"),
            (r#"{"tcp": "x:1", "exec": ["true"]}"#, "exactly one"),
            (r#"{"tcp": "nohost"}"#, "host:port"),
            (r#"{"http": "https://x/"}"#, "http://"),
            (r#"{"exec": []}"#, "needs a command"),
            (r#"{"tcp": "a:1", "level": "sometimes"}"#, "unknown variant `sometimes`"),
            (r#"{"tcp": "a:1", "period": 5}"#, "unknown field"),
            (r#"{"tcp": "a:1", "threshold": 0}"#, "above 0"),
        ];
        for (text, needle) in bad {
            let err = parse(text.as_bytes()).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
        let spec = &parse(br#"{"http": "http://h:81/a/b?c"}"#).unwrap()[0];
        assert_eq!(spec.probe(), Ok(Probe::Http { host: "h".into(), port: 81, path: "/a/b?c".into() }));
        assert!(spec.restarts());
    }
}
