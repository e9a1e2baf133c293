//! Issue 13's smaller findings: the WebSocket version and split subprotocol headers at the
//! upgrade, who may read `/metrics`, and text that only looks non-blank.

use std::time::Duration;

use serde_json::json;
use tokio::net::TcpStream;

use crate::helpers::*;

/// Sends `GET /ws` by hand with these header lines and returns the response head: status and
/// headers.
async fn raw_upgrade(port: u16, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (status, head) = raw_upgrade_on(&mut stream, port, headers, b"").await;
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
}

#[actix_web::test]
async fn a_websocket_version_other_than_13_gets_426_naming_13() {
    let app = spawn_app().await;
    let token = format!("Bearer {}", sign("alice", 300, &[]));
    for versions in [&["8"][..], &["7"], &["14"], &["13, 8"], &["8", "13"], &["13", "8"]] {
        let mut headers = vec![("Authorization", token.as_str())];
        headers.extend(versions.iter().map(|v| ("Sec-WebSocket-Version", *v)));
        let (status, answer) = raw_upgrade(app.port, &headers).await;
        assert_eq!(status, 426, "Sec-WebSocket-Version {versions:?}");
        assert_eq!(header(&answer, "sec-websocket-version"), ["13"], "{versions:?}: {answer:?}");
    }
    let (status, _) = raw_upgrade(app.port, &[("Authorization", &token), ("Sec-WebSocket-Version", "13")]).await;
    assert_eq!(status, 101);
}

#[actix_web::test]
async fn split_subprotocol_headers_are_one_list() {
    let app = spawn_app().await;
    let bearer = format!("authchat.bearer.{}", sign("alice", 300, &[]));
    for lines in [
        vec!["authchat.v1", bearer.as_str()],
        vec![bearer.as_str(), "authchat.v1"],
        vec!["x-other", "authchat.v1", bearer.as_str()],
        vec!["x-other, authchat.v1", bearer.as_str()],
        // A line whose other entry is not ASCII still offers what it lists.
        vec!["x-\u{e9}t\u{e9}, authchat.v1", bearer.as_str()],
        vec![" authchat.v1 ,, ", bearer.as_str()],
    ] {
        let mut headers = vec![("Sec-WebSocket-Version", "13")];
        headers.extend(lines.iter().map(|l| ("Sec-WebSocket-Protocol", *l)));
        let (status, answer) = raw_upgrade(app.port, &headers).await;
        assert_eq!(status, 101, "{lines:?}: {answer:?}");
        assert_eq!(header(&answer, "sec-websocket-protocol"), ["authchat.v1"], "{lines:?}");
    }
    // The bearer entry without the app protocol in any of the lines is still refused.
    let headers =
        [("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Protocol", "x-other"), ("Sec-WebSocket-Protocol", &bearer)];
    assert_eq!(raw_upgrade(app.port, &headers).await.0, 400);
}

#[actix_web::test]
async fn text_of_only_invisible_or_unicode_spaces_is_empty() {
    let app = spawn_app().await;
    let (mut ws, _) = app.connect_as("alice").await;
    ws.send(json!({"type":"join","room":"blank"})).await;
    ws.next_of("joined").await;
    for text in [
        "\u{200B}",
        "\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}",
        "\u{3000}\u{3000}",
        "\u{00A0} \u{2007}\u{202F}",
        "\u{180E}\u{2028}\u{2029}\t\n",
        "\u{200E}\u{200F}\u{034F}\u{00AD}",
    ] {
        ws.send(json!({"type":"send","room":"blank","text": text})).await;
        let reply = ws.next_json().await;
        assert_eq!((reply["type"].as_str(), reply["code"].as_str()), (Some("error"), Some("empty_text")), "{text:?}");
    }
    // Visible text around such characters is still text.
    ws.send(json!({"type":"send","room":"blank","text":"\u{200B}hi\u{3000}"})).await;
    assert_eq!(ws.next_of("message").await["text"], "\u{200B}hi\u{3000}");
}

#[actix_web::test]
async fn metrics_on_the_main_port_answer_only_local_unproxied_requests() {
    let app = spawn_app().await;
    assert_eq!(app.http.get(app.url("/metrics")).send().await.unwrap().status(), 200);
    // A proxy on this host connects from loopback too; what it passes on says so.
    for (name, value) in
        [("X-Forwarded-For", "203.0.113.9"), ("Forwarded", "for=203.0.113.9"), ("X-Real-IP", "203.0.113.9")]
    {
        let res = app.http.get(app.url("/metrics")).header(name, value).send().await.unwrap();
        assert_eq!(res.status(), 403, "{name}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"], "metrics_local_only", "{name}");
    }
}

#[actix_web::test]
async fn metrics_can_have_their_own_listener_and_then_leave_the_main_port() {
    let app = spawn_app_with("[metrics]\nlisten = \"127.0.0.1:0\"").await;
    let port = app.metrics_port.expect("a metrics listener");
    let res = app.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("authchat_connections_open"));
    // Proxied or not: whoever reaches this listener may read it.
    let proxied = app.http.get(format!("http://127.0.0.1:{port}/metrics")).header("X-Forwarded-For", "203.0.113.9");
    assert_eq!(proxied.send().await.unwrap().status(), 200);
    // Only /metrics there, and no longer on the main port, even from loopback.
    assert_eq!(app.http.get(format!("http://127.0.0.1:{port}/healthz")).send().await.unwrap().status(), 404);
    assert_eq!(app.http.get(app.url("/metrics")).send().await.unwrap().status(), 404);
    // It stops with the server.
    app.stop().await.unwrap();
    let gone = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    assert!(gone.get(format!("http://127.0.0.1:{port}/metrics")).send().await.is_err());
}
