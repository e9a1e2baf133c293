//! The credential an upgrade request presents (`ws::presented`): the ticket and token query
//! parameters, the `Sec-WebSocket-Protocol` list, `Authorization` and the session cookie.
//!
//! Input, as text so that seeds stay readable and mutations stay meaningful:
//! ```text
//! jwt|session [no-query-token] [no-first-message]
//! /ws?ticket=…            (the request target)
//! Header-Name: value      (any number, repeats allowed)
//! ```
#![no_main]

use std::sync::OnceLock;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Uri;
use actix_web::test::TestRequest;
use actix_web::ResponseError;
use authchat::auth::AuthMethod;
use authchat::config::{AuthMode, LoadOptions, Settings};
use authchat::ws::session::SocketConfig;
use libfuzzer_sys::fuzz_target;

fn base_config() -> &'static SocketConfig {
    static CONFIG: OnceLock<SocketConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let settings = Settings::load(&LoadOptions { env_vars: Some(Default::default()), ..LoadOptions::default() })
            .expect("the embedded default configuration loads");
        SocketConfig::from_settings(&settings)
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let options = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let mode = if options.contains("session") { AuthMode::Session } else { AuthMode::Jwt };
    let mut config = base_config().clone();
    config.query_token = !options.contains("no-query-token");
    config.first_message = !options.contains("no-first-message");

    // Only a target that parses as a URI reaches a handler.
    let Ok(target) = std::str::from_utf8(trim(lines.next().unwrap_or_default())) else { return };
    if Uri::try_from(target).is_err() {
        return;
    }
    let mut request = TestRequest::get().uri(target);
    let mut header_bytes = Vec::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(trim(&line[..colon])), HeaderValue::from_bytes(trim(&line[colon + 1..])))
        else {
            continue;
        };
        header_bytes.extend_from_slice(value.as_bytes());
        header_bytes.push(b'\n');
        request = request.append_header((name, value));
    }
    let req = request.to_http_request();

    match authchat::ws::presented(&req, mode, &config) {
        Ok(Some((value, method))) => {
            assert_eq!(method == AuthMethod::Session, mode == AuthMode::Session, "{method:?} in {mode:?} mode");
            assert!(method != AuthMethod::Query || config.query_token, "?token= taken while disabled");
            // Taken verbatim from a header (cookie values are percent-decoded, so not those).
            if matches!(method, AuthMethod::Subprotocol | AuthMethod::Header) {
                let found = header_bytes.windows(value.len().max(1)).any(|w| w == value.as_bytes());
                assert!(value.is_empty() || found, "a {method:?} credential that no header carries");
            }
        }
        Ok(None) => assert!(config.first_message && mode == AuthMode::Jwt),
        Err(e) => {
            let status = e.status_code();
            assert!(status.is_client_error(), "a refused credential is the client's fault, got {status}");
        }
    }
});
