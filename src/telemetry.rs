//! Logging set-up, and what stands between a request and a log line: credential query
//! parameters are redacted by name ([`redact_target`]), and every event, whatever crate emits
//! it, is cleaned as a whole before it is written ([`clean_line`]): anything shaped like a token
//! is replaced, and control characters are escaped so no field can start a line of its own.

use std::borrow::Cow;
use std::io::Write as _;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, LogSettings};

/// Query parameters whose values are credentials and never reach a log line.
const SECRET_PARAMS: &[&str] = &["token", "ticket", "access_token", "refresh_token", "password", "code"];

/// What replaces a credential in a log line.
const REDACTED: &str = "[REDACTED]";

/// Installs the global subscriber (text or JSON on stdout). `RUST_LOG` overrides the filter.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let writer = CleanStdout { ansi };
    let builder = fmt().with_env_filter(filter).with_ansi(ansi).with_writer(writer);
    let result = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests start several servers in one process) keeps the first subscriber.
    drop(result);
}

/// Standard output, one cleaned event at a time. The formatter hands each event to a writer of
/// its own, so [`EventWriter`] sees the whole event, not pieces of it.
struct CleanStdout {
    /// The text format colours its output for a terminal; those colour codes are kept.
    ansi: bool,
}

impl<'a> MakeWriter<'a> for CleanStdout {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter { event: Vec::new(), ansi: self.ansi }
    }
}

/// Collects one formatted event and writes it, cleaned, when dropped.
struct EventWriter {
    event: Vec<u8>,
    ansi: bool,
}

impl std::io::Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.event.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if self.event.is_empty() {
            return;
        }
        let event = String::from_utf8_lossy(&self.event);
        let (body, newline) = event.strip_suffix('\n').map_or((&*event, ""), |body| (body, "\n"));
        let line = format!("{}{newline}", clean_line(body, self.ansi));
        // Nowhere to report a failed log write.
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }
}

/// One log event made safe to write as one line: credential-shaped words become
/// `[REDACTED]` ([`looks_like_credential`]), and control characters (C0, DEL, C1), Unicode line
/// and paragraph separators and bidirectional overrides become `\n`, `\r`, `\t` or `\uXXXX`,
/// escapes that read the same in a text line and inside a JSON string. With `ansi`, the
/// formatter's colour codes (`ESC [ digits/semicolons m`, which can only change colours) stay.
pub fn clean_line(line: &str, ansi: bool) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if is_word_char(c) {
            let end = rest.find(|c| !is_word_char(c)).unwrap_or(rest.len());
            let word = &rest[..end];
            out.push_str(if looks_like_credential(word) { REDACTED } else { word });
            rest = &rest[end..];
            continue;
        }
        if ansi && c == '\u{1b}' {
            if let Some(len) = colour_code_len(rest) {
                out.push_str(&rest[..len]);
                rest = &rest[len..];
                continue;
            }
        }
        push_escaped(&mut out, c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The characters of tokens, tickets and session cookies (base64url), with `.` joining a JWT's parts.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Length of an SGR colour code (`ESC [ 1;31 m`) at the start of `text`, if it starts with one.
fn colour_code_len(text: &str) -> Option<usize> {
    let params = text.strip_prefix("\u{1b}[")?;
    let end = params.find(|c: char| !(c.is_ascii_digit() || c == ';'))?;
    params[end..].starts_with('m').then_some(2 + end + 1)
}

/// Whether a word (a run of base64url characters and dots) holds a credential: a part that
/// begins like base64 JSON (`eyJ`: a JWT's header and payload), or a part of 32 or more
/// characters that mixes upper and lower case (random base64url: tickets, refresh tokens,
/// session cookies and JWT signatures are 43) or is all hex (hashes, hex keys). Errs towards
/// redacting: a long mixed-case identifier is lost from the log, a credential is not kept in it.
pub fn looks_like_credential(word: &str) -> bool {
    word.split('.').any(|part| {
        let long = part.len() >= 32;
        let mixed = part.bytes().any(|b| b.is_ascii_uppercase()) && part.bytes().any(|b| b.is_ascii_lowercase());
        (part.starts_with("eyJ") && part.len() >= 10)
            || (long && (mixed || part.bytes().all(|b| b.is_ascii_hexdigit())))
    })
}

/// Appends `c`, escaped when it could end a line, forge one, or hide or reorder text.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
        {
            out.push_str(&format!("\\u{:04x}", c as u32));
        }
        c => out.push(c),
    }
}

/// `path?query` with the value of every credential parameter replaced by `[REDACTED]`, whether
/// parameters are separated by `&` or `;`. Credentials by shape (in the path, or under other
/// names) are left to [`clean_line`], which sees every line.
pub fn redact_target<'a>(path: &'a str, query: &'a str) -> Cow<'a, str> {
    if query.is_empty() {
        return Cow::Borrowed(path);
    }
    let mut target = format!("{path}?");
    for pair in query.split_inclusive(['&', ';']) {
        let (pair, separator) = pair.strip_suffix(['&', ';']).map_or((pair, ""), |p| (p, &pair[p.len()..]));
        let key = pair.split('=').next().unwrap_or_default();
        if SECRET_PARAMS.contains(&percent_decode_lower(key).as_str()) {
            target.push_str(&format!("{key}={REDACTED}{separator}"));
        } else {
            target.push_str(&format!("{pair}{separator}"));
        }
    }
    Cow::Owned(target)
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
        assert_eq!(redact_target("/ws", "x=1;token=abc;b=2"), "/ws?x=1;token=[REDACTED];b=2");
        assert_eq!(redact_target("/login", "a=1;password=hunter2&b"), "/login?a=1;password=[REDACTED]&b");
    }

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.OWcl2uothgVNtRcuIP7vDuw0_uj7bTMiN1Q1PKcanRY";
    const TICKET: &str = "7lCp0H0289qJK01Tngr55ej7JSB2w_UjTnM49KT_NMg";

    #[test]
    fn credentials_are_redacted_by_shape_wherever_they_are() {
        for (line, expected) in [
            (format!("target=/nonexistent/{JWT} status=404"), "target=/nonexistent/[REDACTED] status=404"),
            (format!("target=/ws?x=1;t={TICKET}"), "target=/ws?x=1;t=[REDACTED]"),
            (format!("target=/static/{TICKET}.js"), "target=/static/[REDACTED]"),
            (format!("user={JWT}"), "user=[REDACTED]"),
            // A JWT cut short, or a lone header or payload, is still one.
            ("t=eyJhbGciOiJIUzI1NiJ9.eyJzdW".to_owned(), "t=[REDACTED]"),
            (format!(r#"{{"target":"/x/{}"}}"#, "ab12".repeat(10)), r#"{"target":"/x/[REDACTED]"}"#),
        ] {
            assert_eq!(clean_line(&line, false), expected);
        }
        // What is not credential-shaped stays: short ids, one-case names, dotted file names, UUIDs.
        let kept = "conn_id=7 node=vm-Xh3k9a2m user=alice-the-administrator-of-many-rooms \
                    file=authchat-client-library.bundle.min.js id=123e4567-e89b-12d3-a456-426614174000 \
                    at=2026-11-30T07:30:39.063892Z";
        assert_eq!(clean_line(kept, false), kept);
    }

    #[test]
    fn control_characters_are_escaped_so_no_field_starts_a_line() {
        let forged = "user=x\n2001-01-01T00:00:00Z  INFO forged\r\0\u{1b}[2J\t\u{7f}\u{85}\u{2028}\u{202e}end";
        assert_eq!(
            clean_line(forged, false),
            r"user=x\n2001-01-01T00:00:00Z  INFO forged\r\u0000\u001b[2J\t\u007f\u0085\u2028\u202eend"
        );
        // Escapes that are valid inside a JSON string, so a JSON line stays JSON.
        let json = serde_json::json!({"f": "a\u{85}\u{2028}b"}).to_string();
        let cleaned: serde_json::Value = serde_json::from_str(&clean_line(&json, false)).unwrap();
        assert_eq!(cleaned["f"], "a\u{85}\u{2028}b");
        // Colour codes stay for a terminal, anything else after ESC does not.
        let coloured = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x\u{1b}[2J";
        assert_eq!(clean_line(coloured, true), "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x\\u001b[2J");
        assert!(clean_line(coloured, false).starts_with(r"\u001b[2m"));
    }
}
