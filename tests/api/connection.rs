//! The TCP connection beneath a socket, seen byte by byte from a raw client (issue 16): it ends
//! as soon as the close handshake is over, bytes sent right behind the handshake are read, and
//! an upgrade that is refused says why and ends the connection.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// How soon after the close handshake the server must have ended TCP. The work is a few
/// microseconds; actix-http's HTTP/1 dispatcher used to linger 0.5 to 1 s here.
const RELEASE_MARGIN: Duration = Duration::from_millis(400);

/// An upgrade request for `GET /ws` with these extra header lines, then `behind` in the same
/// write: the connection, the response's status and its head.
async fn handshake(port: u16, headers: &[(&str, &str)], behind: &[u8]) -> (TcpStream, u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut headers = headers.to_vec();
    headers.push(("Sec-WebSocket-Version", "13"));
    let (status, head) = raw_upgrade_on(&mut stream, port, &headers, behind).await;
    (stream, status, head)
}

async fn bearer_handshake(port: u16, user: &str, behind: &[u8]) -> TcpStream {
    let bearer = format!("Bearer {}", sign(user, 300, &[]));
    let (stream, status, head) = handshake(port, &[("Authorization", &bearer)], behind).await;
    assert_eq!(status, 101, "{head}");
    stream
}

/// A masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

fn text_frame(value: Value) -> Vec<u8> {
    client_frame(0x1, value.to_string().as_bytes())
}

/// The next frame from the server (unmasked): opcode and payload.
async fn server_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    tokio::time::timeout(WAIT, async {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await.expect("a frame, not the end of the connection");
        let len = match head[1] & 0x7F {
            126 => u64::from(stream.read_u16().await.unwrap()),
            127 => stream.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        stream.read_exact(&mut payload).await.unwrap();
        (head[0] & 0x0F, payload)
    })
    .await
    .expect("a frame in time")
}

/// Text frames until one of type `kind`, which is returned.
async fn server_message(stream: &mut TcpStream, kind: &str) -> Value {
    loop {
        let (opcode, payload) = server_frame(stream).await;
        assert_eq!(opcode, 0x1, "expected text, got opcode {opcode}");
        let message: Value = serde_json::from_slice(&payload).unwrap();
        if message["type"] == kind {
            return message;
        }
    }
}

/// Reads until the server ends the connection; how long that took.
async fn time_to_end(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await.expect("the server ends TCP");
    assert!(read.is_ok() && rest.is_empty(), "nothing follows the close handshake: {read:?} {rest:?}");
    started.elapsed()
}

#[actix_web::test]
async fn the_server_ends_tcp_as_soon_as_the_close_handshake_is_over() {
    let app = spawn_app().await;

    // The server closes (an operator's disconnect); the client answers and keeps its side open.
    let mut alice = bearer_handshake(app.port, "alice", b"").await;
    server_message(&mut alice, "welcome").await;
    let admin = sign("root", 300, &["admin"]);
    let (status, _) = app.send_json(Method::DELETE, "/admin/users/alice/connections", Some(&admin)).await;
    assert_eq!(status, 200);
    let (opcode, payload) = server_frame(&mut alice).await;
    assert_eq!(opcode, 0x8, "a close frame");
    alice.write_all(&client_frame(0x8, &payload[..2])).await.unwrap();
    let waited = time_to_end(&mut alice).await;
    assert!(waited < RELEASE_MARGIN, "the server held TCP {waited:?} after the peer answered its close");

    // The client closes; the server answers, then ends TCP without waiting for the client.
    let mut bob = bearer_handshake(app.port, "bob", b"").await;
    server_message(&mut bob, "welcome").await;
    bob.write_all(&client_frame(0x8, &1000u16.to_be_bytes())).await.unwrap();
    let (opcode, payload) = server_frame(&mut bob).await;
    assert_eq!((opcode, &payload[..]), (0x8, &1000u16.to_be_bytes()[..]), "the close is answered with its code");
    let waited = time_to_end(&mut bob).await;
    assert!(waited < RELEASE_MARGIN, "the server held TCP {waited:?} after answering the close");
}

#[actix_web::test]
async fn frames_sent_right_behind_the_handshake_are_read() {
    let app = spawn_app().await;
    let behind = text_frame(json!({"type": "join", "room": "early"}));
    let mut carol = bearer_handshake(app.port, "carol", &behind).await;
    let joined = server_message(&mut carol, "joined").await;
    assert_eq!(joined["room"], "early");
}

#[actix_web::test]
async fn a_handshake_with_a_chunked_body_is_refused() {
    let app = spawn_app().await;
    let bearer = format!("Bearer {}", sign("dave", 300, &[]));
    let headers = [("Authorization", bearer.as_str()), ("Transfer-Encoding", "chunked")];
    let (mut stream, status, head) = handshake(app.port, &headers, b"0\r\n\r\n").await;
    assert_eq!(status, 400, "{head}");
    let mut body = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut body)).await;
    assert!(String::from_utf8_lossy(&body).contains("bad_handshake"), "{}", String::from_utf8_lossy(&body));
}

#[actix_web::test]
async fn a_refused_upgrade_says_why_and_ends_the_connection() {
    let app = spawn_app().await;
    let (mut stream, status, head) = handshake(app.port, &[("Authorization", "Bearer not-a-token")], b"").await;
    assert_eq!(status, 401, "{head}");
    assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
    let mut body = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut body)).await.expect("the server ends the connection").unwrap();
    let body: Value = serde_json::from_slice(&body).expect("the whole JSON body, then the end");
    assert_eq!(body["error"], "invalid_token", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}
