//! Frame-level behaviour: fragments, size limit, UTF-8, binary, rate limit, heartbeat.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn fragmented_messages_are_reassembled() {
    let app = spawn_app().await;
    let (mut ws, _) = app.connect_as("alice").await;
    let text = json!({"type":"join","room":"fragments"}).to_string().into_bytes();
    let (a, rest) = text.split_at(5);
    let (b, c) = rest.split_at(10);
    ws.send_frame(a.to_vec(), WsClient::TEXT, false).await;
    ws.send_frame(b.to_vec(), WsClient::CONTINUE, false).await;
    ws.send_frame(c.to_vec(), WsClient::CONTINUE, true).await;
    assert_eq!(ws.next_of("joined").await["room"], "fragments");
}

#[actix_web::test]
async fn a_message_over_the_limit_closes_1009_whole_or_fragmented() {
    let app = spawn_app_with("[ws]\nmax_message_size = 2048").await;
    let (mut ws, _) = app.connect_as("alice").await;
    ws.send_text(&"x".repeat(3000)).await;
    assert_eq!(ws.expect_close().await.0, 1009);

    // each fragment is small; the whole is not
    let (mut ws, _) = app.connect_as("alice").await;
    ws.send_frame(vec![b' '; 1000], WsClient::TEXT, false).await;
    ws.send_frame(vec![b' '; 1000], WsClient::CONTINUE, false).await;
    ws.send_frame(vec![b' '; 1000], WsClient::CONTINUE, true).await;
    assert_eq!(ws.expect_close().await.0, 1009);

    // the server is fine afterwards
    let (mut ws, _) = app.connect_as("alice").await;
    ws.assert_alive().await;
}

#[actix_web::test]
async fn invalid_utf8_closes_1007() {
    let app = spawn_app().await;
    let (mut ws, _) = app.connect_as("alice").await;
    ws.send_frame(vec![b'{', 0xff, 0xfe, b'}'], WsClient::TEXT, true).await;
    assert_eq!(ws.expect_close().await.0, 1007);

    let (mut ws, _) = app.connect_as("alice").await;
    // a multi-byte character split across fragments is fine…
    let euro = "€".as_bytes();
    ws.send_frame([br#"{"type":"join","room":"a"#.as_slice(), &euro[..1]].concat(), WsClient::TEXT, false).await;
    ws.send_frame([&euro[1..], br#""}"#.as_slice()].concat(), WsClient::CONTINUE, true).await;
    assert_eq!(ws.next_of("error").await["code"], "invalid_room", "reassembled, then judged as a room name");
    // …but an invalid sequence in fragments is not
    ws.send_frame(vec![b'{'], WsClient::TEXT, false).await;
    ws.send_frame(vec![0xc3, 0x28], WsClient::CONTINUE, true).await;
    assert_eq!(ws.expect_close().await.0, 1007);
}

#[actix_web::test]
async fn invalid_utf8_fails_fast_before_the_message_is_whole() {
    // Autobahn 6.4.1: the fragment that makes the text invalid closes the socket; the last
    // fragment never comes.
    let app = spawn_app().await;
    let (mut ws, _) = app.connect_as("alice").await;
    ws.send_frame("κόσμε".as_bytes().to_vec(), WsClient::TEXT, false).await;
    ws.send_frame(vec![0xf4, 0x90, 0x80, 0x80], WsClient::CONTINUE, false).await;
    assert_eq!(ws.expect_close().await.0, 1007);
}

#[actix_web::test]
async fn a_close_reason_that_is_not_utf8_is_answered_1007() {
    // Autobahn 7.5.1; a close code that is not allowed on the wire (1005) is a protocol error.
    let app = spawn_app().await;
    let (mut ws, _) = app.connect_as("alice").await;
    ws.send_frame(vec![0x03, 0xe8, b'b', 0xff, 0xfe], WsClient::CLOSE, true).await;
    assert_eq!(ws.expect_close().await.0, 1007);
    let (mut ws, _) = app.connect_as("alice").await;
    ws.send_frame(vec![0x03, 0xed], WsClient::CLOSE, true).await;
    assert_eq!(ws.expect_close().await.0, 1002);
}

#[actix_web::test]
async fn binary_frames_get_an_error_reply() {
    let app = spawn_app().await;
    let (mut ws, _) = app.connect_as("alice").await;
    ws.send_binary(&[1, 2, 3]).await;
    assert_eq!(ws.next_json().await["code"], "binary_not_supported");
    ws.assert_alive().await;
}

#[actix_web::test]
async fn flooding_gets_rate_limited_then_closed_4008() {
    let app = spawn_app_with("[ws.rate_limit]\nper_second = 1.0\nburst = 3.0\nmax_violations = 5").await;
    let (mut ws, _) = app.connect_as("alice").await;
    for _ in 0..12 {
        ws.send(json!({"type":"history","room":"nowhere"})).await;
    }
    let mut rate_limited = 0;
    let code = loop {
        match ws.recv().await {
            Event::Json(v) if v["code"] == "rate_limited" => {
                assert_eq!((v["request"].as_str(), v["room"].as_str()), (Some("history"), Some("nowhere")), "{v}");
                rate_limited += 1
            }
            Event::Json(_) => {}
            Event::Close(code, _) => break code,
            Event::Ended => panic!("no close frame"),
        }
    };
    assert_eq!(code, 4008);
    assert_eq!(rate_limited, 5, "each refused message is answered, and the fifth refusal closes");
}

#[actix_web::test]
async fn a_burst_within_the_bucket_is_not_limited() {
    let app = spawn_app_with("[ws.rate_limit]\nper_second = 1.0\nburst = 5.0\nmax_violations = 5").await;
    let (mut ws, _) = app.connect_as("alice").await;
    for _ in 0..5 {
        ws.send(json!({"type":"history","room":"nowhere"})).await;
        assert_eq!(ws.next_json().await["code"], "not_member");
    }
    ws.send(json!({"type":"history","room":"nowhere"})).await;
    assert_eq!(ws.next_json().await["code"], "rate_limited");
}

#[actix_web::test]
async fn the_server_pings_and_closes_a_silent_peer() {
    let app = spawn_app_with("[ws]\nheartbeat_interval = \"300ms\"\nclient_timeout = \"1200ms\"").await;
    let (mut ws, _) = app.connect_as("alice").await;
    // an attentive client answers pings (tungstenite does while reading) and stays
    let started = Instant::now();
    assert!(ws.recv_within(Duration::from_millis(2000)).await.is_none(), "nothing but pings arrives");
    assert!(started.elapsed() >= Duration::from_millis(1900));
    ws.assert_alive().await;
    ws.close().await;

    // a client that reads nothing answers no pings and is closed
    let (mut silent, _) = app.connect_as("bob").await;
    let connected = Instant::now();
    let admin = sign("root", 60, &["admin"]);
    while app.get_json("/admin/connections?user=bob", Some(&admin)).await.1["connections"] != json!([]) {
        assert!(connected.elapsed() < WAIT, "the registry never dropped the silent peer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(connected.elapsed() >= Duration::from_millis(1200), "not before client_timeout");
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("authchat_closes_total{code=\"1000\"} 1"), "{metrics}");
    // The close frame may be lost to a reset: the client's late pongs hit a closed socket.
    match silent.recv().await {
        Event::Close(code, reason) => assert_eq!((code, reason.as_str()), (1000, "heartbeat timeout")),
        Event::Ended => {}
        Event::Json(v) => panic!("unexpected {v}"),
    }
}
