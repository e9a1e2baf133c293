//! `GET /ws/echo` (`ws.echo = true`): the socket code without the chat protocol, as
//! `scripts/autobahn.sh` drives it.

use std::time::Duration;

use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

const ECHO: &str = "[ws]\necho = true";

async fn connect_echo(app: &TestApp, user: &str) -> WsClient {
    let url = app.ws_url(&format!("/ws/echo?token={}", sign(user, 300, &[])));
    connect(&url, &[]).await.expect("echo upgrade accepted").0
}

#[actix_web::test]
async fn each_message_comes_back_as_it_came_and_nothing_else_is_sent() {
    let app = spawn_app_with(ECHO).await;
    let mut ws = connect_echo(&app, "alice").await;
    assert_eq!(ws.next_message_within(Duration::from_millis(300)).await, None, "no welcome");

    ws.send_text("not JSON, not a request").await;
    assert_eq!(ws.next_message_within(WAIT).await, Some(Message::text("not JSON, not a request")));
    ws.send_binary(&[0, 1, 2, 255]).await;
    assert_eq!(ws.next_message_within(WAIT).await, Some(Message::binary(vec![0, 1, 2, 255])));
    // a fragmented message comes back whole, in one frame
    ws.send_frame(b"frag".to_vec(), WsClient::BINARY, false).await;
    ws.send_frame(b"ments".to_vec(), WsClient::CONTINUE, true).await;
    assert_eq!(ws.next_message_within(WAIT).await, Some(Message::binary(b"fragments".to_vec())));

    // the same frame rules as /ws
    ws.send_frame(vec![b'a', 0xff], WsClient::TEXT, true).await;
    assert_eq!(ws.expect_close().await.0, 1007);
}

#[actix_web::test]
async fn an_echo_socket_is_sent_none_of_the_registrys_frames_but_is_closed_at_exp() {
    let app = spawn_app_with(ECHO).await;
    // warn_before (60 s) is longer than the token's life: the registry sends `expiring` at once
    let url = app.ws_url(&format!("/ws/echo?token={}", sign("alice", 2, &[])));
    let mut ws = connect(&url, &[]).await.expect("echo upgrade accepted").0;
    ws.send_text("first").await;
    assert_eq!(ws.next_message_within(WAIT).await, Some(Message::text("first")), "its echo, no `expiring`");
    match ws.next_message_within(Duration::from_secs(5)).await {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 4001),
        other => panic!("expected the 4001 close and nothing before it, got {other:?}"),
    }
    let metrics = app.metrics().await;
    assert!(metrics.contains("authchat_closes_total{code=\"4001\"} 1"), "{metrics}");
}

#[actix_web::test]
async fn the_echo_route_exists_only_with_ws_echo_and_needs_a_credential() {
    let app = spawn_app().await;
    let token = sign("alice", 300, &[]);
    expect_refused(&app.ws_url(&format!("/ws/echo?token={token}")), &[], 404, "not_found").await;

    let app = spawn_app_with(ECHO).await;
    // no first-message auth: an echo socket would echo the auth message
    expect_refused(&app.ws_url("/ws/echo"), &[], 401, "missing_credentials").await;
    expect_refused(&app.ws_url("/ws/echo?token=not.a.token"), &[], 401, "invalid_token").await;
    let bearer = format!("Bearer {token}");
    assert!(connect(&app.ws_url("/ws/echo"), &[("Authorization", &bearer)]).await.is_ok());
}

#[actix_web::test]
async fn the_rate_limits_apply_to_echo_sockets_too() {
    let app =
        spawn_app_with("[ws]\necho = true\n[ws.rate_limit]\nper_second = 1.0\nburst = 3.0\nmax_violations = 5").await;
    let mut ws = connect_echo(&app, "alice").await;
    for i in 0..12 {
        ws.send_text(&i.to_string()).await;
    }
    let mut echoed = 0;
    loop {
        match ws.next_message_within(WAIT).await {
            Some(Message::Text(_)) => echoed += 1,
            Some(Message::Close(frame)) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(4008));
                break;
            }
            other => panic!("expected echoes then a close, got {other:?}"),
        }
    }
    assert!((3..=4).contains(&echoed), "the burst is echoed, the rest dropped: {echoed}");
}
