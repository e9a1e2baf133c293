//! Health, readiness, metrics, and graceful shutdown of the in-process server.

use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    assert_eq!(app.get_json("/healthz", None).await, (200, json!({"status":"ok"})));
    assert_eq!(app.get_json("/readyz", None).await, (200, json!({"status":"ready","store":"memory"})));
    let (status, body) = app.get_json("/nope", None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    let (mut ws, _) = app.connect_as("alice").await;
    ws.send(json!({"type":"join","room":"m"})).await;
    ws.next_of("joined").await;
    let res = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = res.text().await.unwrap();
    for line in [
        "authchat_connections_open 1",
        "authchat_upgrades_accepted_total{method=\"query\"} 1",
        "authchat_messages_in_total 1",
        "authchat_messages_out_total 2",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    ws.close().await;
}

#[actix_web::test]
async fn shutdown_says_goodbye_closes_1001_and_flips_readiness() {
    let mut app = spawn_app().await;
    let (mut ws, _) = app.connect_as("alice").await;
    let port = app.port;
    app.begin_stop();
    assert_eq!(ws.next_json().await, json!({"type":"server_shutdown"}));
    assert_eq!(ws.expect_close().await, (1001, "server shutting down".into()));
    app.stop().await.expect("the server stops cleanly");
    // and the port is closed
    assert!(reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.is_err());
}

#[actix_web::test]
async fn responses_carry_security_headers_and_config_is_public() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/api/config")).send().await.unwrap();
    let headers = res.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains("connect-src 'self'")
            && csp.contains("frame-ancestors 'none'")
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let config: serde_json::Value = res.json().await.unwrap();
    assert_eq!(config["mode"], "jwt");
    assert_eq!(config["first_message"], true);
    // What a client needs to stay within the limits instead of finding them by refusal.
    assert_eq!(
        (&config["rate_limit"], &config["max_text_chars"], &config["max_room_name_chars"]),
        (
            &serde_json::json!({"per_second": 20.0, "burst": 40.0, "max_violations": 20, "user_per_second": 40.0, "user_burst": 80.0}),
            &serde_json::json!(4000),
            &serde_json::json!(64)
        ),
    );
    assert!(!config.to_string().contains(SECRET));
}
