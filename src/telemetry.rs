//! Logging set-up and the redaction every logged URL goes through.

use std::borrow::Cow;

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, LogSettings};

/// Query parameters whose values are credentials and never reach a log line.
const SECRET_PARAMS: &[&str] = &["token", "ticket", "access_token", "refresh_token", "password", "code"];

/// Installs the global subscriber (text or JSON on stdout). `RUST_LOG` overrides the filter.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stdout);
    let result = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests start several servers in one process) keeps the first subscriber.
    drop(result);
}

/// `path?query` with the value of every credential parameter replaced by `[REDACTED]`.
pub fn redact_target<'a>(path: &'a str, query: &'a str) -> Cow<'a, str> {
    if query.is_empty() {
        return Cow::Borrowed(path);
    }
    let redacted: Vec<Cow<str>> = query
        .split('&')
        .map(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            let decoded = percent_decode_lower(key);
            if SECRET_PARAMS.contains(&decoded.as_str()) {
                Cow::Owned(format!("{key}=[REDACTED]"))
            } else {
                Cow::Borrowed(pair)
            }
        })
        .collect();
    Cow::Owned(format!("{path}?{}", redacted.join("&")))
}

/// Lower-cased, percent-decoded parameter name, so `%74oken` and `TOKEN` are caught too.
fn percent_decode_lower(key: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', h, l]) => hex(*h).zip(hex(*l)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_queries_are_redacted() {
        assert_eq!(redact_target("/ws", ""), "/ws");
        assert_eq!(redact_target("/ws", "token=abc.def.ghi"), "/ws?token=[REDACTED]");
        assert_eq!(redact_target("/ws", "room=a&ticket=xyz&b=1"), "/ws?room=a&ticket=[REDACTED]&b=1");
        assert_eq!(redact_target("/ws", "TOKEN=abc"), "/ws?TOKEN=[REDACTED]");
        assert_eq!(redact_target("/ws", "%74oken=abc"), "/ws?%74oken=[REDACTED]");
        assert_eq!(redact_target("/ws", "tok%65n=abc"), "/ws?tok%65n=[REDACTED]");
        assert!(!redact_target("/ws", "a=1&token=s3cr3t&token=again").contains("s3cr3t"));
    }
}
