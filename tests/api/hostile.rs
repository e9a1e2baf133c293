//! Hostile and slow clients (issue 9): every buffer, wait and cap holds against a client that
//! does not play along. Raw TCP clients stand in for the attacker, so nothing on the client
//! side reads, answers or buffers on its behalf.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// A WebSocket opened by hand: the handshake is done, and from then on the test decides what
/// is read and written.
struct RawSocket {
    stream: TcpStream,
    local: SocketAddr,
}

impl RawSocket {
    /// Opens `/ws` from `from` with these extra headers; `small_window` shrinks the receive
    /// buffer so a peer that stops reading fills up after a few KiB. Answers the status line.
    async fn open(port: u16, from: IpAddr, headers: &[(&str, &str)], small_window: bool) -> (Self, String) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if small_window {
            socket.set_recv_buffer_size(4096).unwrap();
        }
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        let mut stream = socket.connect(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)).await.unwrap();
        let mut headers = headers.to_vec();
        headers.push(("Sec-WebSocket-Version", "13"));
        let (_, head) = raw_upgrade_on(&mut stream, port, &headers, b"").await;
        let status = head.lines().next().unwrap_or_default().to_owned();
        let local = stream.local_addr().unwrap();
        (Self { stream, local }, status)
    }

    async fn open_as(port: u16, user: &str, small_window: bool) -> Self {
        let token = sign(user, 300, &[]);
        let (socket, status) = Self::open(
            port,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &[("Authorization", &format!("Bearer {token}"))],
            small_window,
        )
        .await;
        assert!(status.contains(" 101 "), "{status}");
        socket
    }

    /// Sends one masked client frame (a zero mask leaves the payload readable).
    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mut frame = frame_header(opcode, payload.len() as u64);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await.unwrap();
    }

    async fn send_json(&mut self, value: Value) {
        self.send_frame(0x1, value.to_string().as_bytes()).await;
    }

    /// Reads frames until a close frame; answers its code, or `None` if the connection ended
    /// without one.
    async fn read_close(&mut self) -> Option<u16> {
        let mut buf = Vec::new();
        let deadline = Instant::now() + WAIT;
        loop {
            while buf.len() >= 2 {
                let (opcode, len) = (buf[0] & 0x0F, usize::from(buf[1] & 0x7F));
                let (start, len) = match len {
                    126 if buf.len() >= 4 => (4, usize::from(u16::from_be_bytes([buf[2], buf[3]]))),
                    127 if buf.len() >= 10 => (10, u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize),
                    126 | 127 => break,
                    n => (2, n),
                };
                if buf.len() < start + len {
                    break;
                }
                if opcode == 0x8 {
                    return Some(u16::from_be_bytes([buf[start], buf[start + 1]]));
                }
                buf.drain(..start + len);
            }
            let mut chunk = [0u8; 65536];
            let left = deadline.checked_duration_since(Instant::now()).expect("a close frame in time");
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await.expect("a close frame in time") {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn frame_header(opcode: u8, len: u64) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match len {
        0..=125 => out.push(0x80 | len as u8),
        126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

/// Whether the server still has an ESTABLISHED TCP connection to this client address, read
/// from the kernel's table (the test and the server share a network namespace).
fn server_side_established(server_port: u16, client: SocketAddr) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let client_ip = match client.ip() {
        IpAddr::V4(ip) => u32::from_le_bytes(ip.octets()),
        IpAddr::V6(_) => unreachable!("the tests use IPv4"),
    };
    let local = format!("{:08X}:{:04X}", u32::from_le_bytes([127, 0, 0, 1]), server_port);
    let remote = format!("{client_ip:08X}:{:04X}", client.port());
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&local.as_str())
            && fields.get(2) == Some(&remote.as_str())
            && fields.get(3) == Some(&"01")
    })
}

/// Polls `condition` until it holds or `limit` passes; answers whether it held.
async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}

/// Whether an upgrade to `url` is accepted within `limit`, trying every 100 ms.
async fn accepted_within(url: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if connect(url, &[]).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[actix_web::test]
async fn a_frame_declaring_too_much_closes_1009_before_its_payload_is_read() {
    // No credential: first-message auth, with a long deadline so only the size rule can act.
    let app = spawn_app_with("[auth]\nauth_timeout = \"60s\"").await;
    let (mut socket, status) = RawSocket::open(app.port, IpAddr::V4(Ipv4Addr::LOCALHOST), &[], false).await;
    assert!(status.contains(" 101 "), "{status}");
    let mut header = frame_header(0x1, 1 << 40);
    header.extend_from_slice(&[b'x'; 1024]);
    socket.stream.write_all(&header).await.unwrap();
    // Keep streaming the declared payload while waiting for the verdict.
    let (mut reader, mut writer) = socket.stream.into_split();
    let flood = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..512 {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut first = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), reader.read_exact(&mut first))
        .await
        .expect("the server answers at once, long before 32 MiB or the auth deadline")
        .unwrap();
    assert_eq!(first[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([first[2], first[3]]), 1009);
    flood.abort();
    assert!(app.metrics().await.contains("authchat_closes_total{code=\"1009\"} 1"));
    // the server is fine afterwards
    let (mut ws, _) = app.connect_as("alice").await;
    ws.assert_alive().await;
}

#[actix_web::test]
async fn a_client_that_stops_reading_is_cut_off_and_the_room_goes_on() {
    let app = spawn_app_with(
        "[ws]\nmax_outbound_bytes = 65536\nclose_timeout = \"2s\"\n\
         [ws.rate_limit]\nper_second = 100000.0\nburst = 100000.0\nuser_per_second = 100000.0\nuser_burst = 100000.0\n",
    )
    .await;
    // bob joins, then never reads again, through a small receive window
    let mut bob = RawSocket::open_as(app.port, "bob", true).await;
    bob.send_json(json!({"type":"join","room":"flood"})).await;
    let (mut alice, _) = app.connect_as("alice").await;
    alice.send(json!({"type":"join","room":"flood"})).await;
    alice.next_of("joined").await;

    // alice floods the room with ~9 MB, in batches she reads back (she is a good reader)
    let text = "y".repeat(3500);
    for batch in 0..250 {
        for i in 0..10 {
            alice.send(json!({"type":"send","room":"flood","text":text,"ref":format!("{batch}-{i}")})).await;
        }
        let mut acks = 0;
        while acks < 10 {
            match alice.recv().await {
                Event::Json(v) if v["type"] == "ack" => acks += 1,
                Event::Json(v) if v["type"] == "error" => panic!("alice was refused: {v}"),
                Event::Json(_) => {}
                other => panic!("alice lost her socket: {other:?}"),
            }
        }
    }

    // bob's socket was closed for not reading, and its TCP connection is gone soon after,
    // although bob never answers the close
    assert!(
        eventually(Duration::from_secs(10), || !server_side_established(app.port, bob.local)).await,
        "the server still holds bob's TCP connection"
    );
    let m = app.metrics().await;
    assert!(m.contains("authchat_closes_total{code=\"4009\"} 1"), "{m}");
    let admin = sign("root", 60, &["admin"]);
    let (_, body) = app.get_json("/admin/connections?user=bob", Some(&admin)).await;
    assert_eq!(body["connections"], json!([]));
    alice.assert_alive().await;
}

#[actix_web::test]
async fn a_closed_socket_counts_against_the_user_cap_until_its_tcp_connection_is_gone() {
    let app = spawn_app_with("[ws]\nmax_connections_per_user = 2\nclose_timeout = \"2s\"").await;
    // two sockets that will never answer a close
    let first = RawSocket::open_as(app.port, "carol", false).await;
    let second = RawSocket::open_as(app.port, "carol", false).await;
    let admin = sign("root", 60, &["admin"]);
    let (status, body) = app.send_json(reqwest::Method::DELETE, "/admin/users/carol/connections", Some(&admin)).await;
    assert_eq!((status, body["closed"].as_u64()), (200, Some(2)));

    // while their TCP connections linger, carol is still at her cap
    let url = app.ws_url(&format!("/ws?token={}", sign("carol", 300, &[])));
    expect_refused(&url, &[], 429, "too_many_connections").await;

    // within close_timeout (plus margin) both are gone, and carol may connect again
    let gone = eventually(Duration::from_secs(10), || {
        !server_side_established(app.port, first.local) && !server_side_established(app.port, second.local)
    })
    .await;
    assert!(gone, "the server still holds a closed socket's TCP connection");
    let accepted = accepted_within(&url, Duration::from_secs(5)).await;
    assert!(accepted, "carol can connect once her closed sockets are gone");
}

#[actix_web::test]
async fn binary_frames_and_pings_count_against_the_rate_limit() {
    let app = spawn_app_with("[ws.rate_limit]\nper_second = 1.0\nburst = 3.0\nmax_violations = 5").await;
    let mut socket = RawSocket::open_as(app.port, "alice", false).await;
    for _ in 0..300 {
        socket.send_frame(0x2, &[1, 2, 3]).await;
    }
    assert_eq!(socket.read_close().await, Some(4008), "a binary flood is closed like a text flood");

    let mut socket = RawSocket::open_as(app.port, "alice", false).await;
    for _ in 0..5000 {
        socket.send_frame(0x9, b"ping").await;
    }
    // count the pongs that came back before the close
    let mut pongs = 0;
    let mut buf = Vec::new();
    let code = loop {
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(WAIT, socket.stream.read(&mut chunk)).await.expect("an answer in time").unwrap();
        assert!(n > 0, "closed without a close frame");
        buf.extend_from_slice(&chunk[..n]);
        let mut code = None;
        while buf.len() >= 2 && buf.len() >= 2 + usize::from(buf[1] & 0x7F) {
            let len = usize::from(buf[1] & 0x7F);
            match buf[0] & 0x0F {
                0xA => pongs += 1,
                0x8 => code = Some(u16::from_be_bytes([buf[2], buf[3]])),
                _ => {}
            }
            buf.drain(..2 + len);
        }
        if let Some(code) = code {
            break code;
        }
    };
    assert_eq!(code, 4008);
    assert!(pongs <= 4, "only the pings within the bucket are answered, got {pongs} pongs");
}

#[actix_web::test]
async fn a_users_sockets_share_one_allowance() {
    let app = spawn_app_with(
        "[ws.rate_limit]\nper_second = 100.0\nburst = 100.0\nmax_violations = 1000\nuser_per_second = 1.0\nuser_burst = 4.0",
    )
    .await;
    let mut sockets = Vec::new();
    for _ in 0..4 {
        sockets.push(app.connect_as("alice").await.0);
    }
    // each socket is far under its own limit; together they are over alice's
    for ws in &mut sockets {
        for _ in 0..2 {
            ws.send(json!({"type":"history","room":"nowhere"})).await;
        }
    }
    let mut refused = 0;
    for ws in &mut sockets {
        for _ in 0..2 {
            let v = ws.next_json().await;
            match v["code"].as_str() {
                Some("rate_limited") => refused += 1,
                Some("not_member") => {}
                _ => panic!("unexpected {v}"),
            }
        }
    }
    assert!(refused >= 3, "8 messages against a shared burst of 4: {refused} refused");
    // another user is not affected
    let (mut bob, _) = app.connect_as("bob").await;
    bob.send(json!({"type":"history","room":"nowhere"})).await;
    assert_eq!(bob.next_json().await["code"], "not_member");
}

#[actix_web::test]
async fn rooms_with_history_survive_another_users_room_spree() {
    let app = spawn_app_with(
        "[chat]\nmax_rooms = 3\nmax_rooms_created_per_user = 2\nroom_creations_per_minute = 100\n\
         [ws.rate_limit]\nper_second = 1000.0\nburst = 1000.0\nuser_per_second = 1000.0\nuser_burst = 1000.0",
    )
    .await;
    let (mut alice, _) = app.connect_as("alice").await;
    alice.send(json!({"type":"join","room":"keep"})).await;
    alice.next_of("joined").await;
    alice.send(json!({"type":"send","room":"keep","text":"remember me"})).await;
    alice.next_of("ack").await;
    alice.send(json!({"type":"leave","room":"keep"})).await;
    alice.next_of("left").await;

    // mallory may create two rooms, not a third
    let (mut mallory, _) = app.connect_as("mallory").await;
    for (i, room) in ["m1", "m2", "m3"].iter().enumerate() {
        mallory.send(json!({"type":"join","room":room})).await;
        let v = mallory.next_json().await;
        if i < 2 {
            assert_eq!(v["type"], "joined", "{v}");
        } else {
            assert_eq!((v["code"].as_str(), v["room"].as_str()), (Some("too_many_rooms"), Some("m3")), "{v}");
        }
    }
    // the node is full (keep, m1, m2): a new room is refused, and "keep" is not evicted for it
    let (mut eve, _) = app.connect_as("eve").await;
    eve.send(json!({"type":"join","room":"e1"})).await;
    let v = eve.next_json().await;
    assert_eq!(v["code"], "too_many_rooms", "{v}");
    assert!(v["message"].as_str().unwrap().contains("maximum"), "{v}");

    alice.send(json!({"type":"join","room":"keep"})).await;
    let joined = alice.next_of("joined").await;
    assert_eq!(joined["history"][0]["text"], "remember me", "{joined}");
}

#[actix_web::test]
async fn room_creation_is_rate_limited_per_user() {
    let app = spawn_app_with("[chat]\nroom_creations_per_minute = 2").await;
    let (mut ws, _) = app.connect_as("mallory").await;
    for room in ["a", "b"] {
        ws.send(json!({"type":"join","room":room})).await;
        ws.next_of("joined").await;
    }
    ws.send(json!({"type":"join","room":"c"})).await;
    let v = ws.next_json().await;
    assert_eq!(v["code"], "too_many_rooms", "{v}");
    assert!(v["message"].as_str().unwrap().contains("too fast"), "{v}");
}

#[actix_web::test]
async fn past_the_global_cap_upgrades_get_503_and_http_keeps_working() {
    let app = spawn_app_with("[server]\nmax_connections = 2").await;
    let (_a, _) = app.connect_as("alice").await;
    let (b, _) = app.connect_as("bob").await;
    let url = app.ws_url(&format!("/ws?token={}", sign("carol", 300, &[])));
    let refused = connect(&url, &[]).await.err().expect("the third socket is refused");
    assert_eq!((refused.status, refused.body["error"].as_str()), (503, Some("server_full")), "{:?}", refused.body);
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200, "plain HTTP is still served");

    // a slot frees when a socket's connection is gone
    b.close().await;
    let accepted = accepted_within(&url, Duration::from_secs(5)).await;
    assert!(accepted);
}

#[actix_web::test]
async fn handshakes_are_rate_limited_per_address() {
    let app = spawn_app_with("[ws.handshake_limit]\nper_second = 0.1\nburst = 3.0").await;
    let token = sign("alice", 300, &[]);
    let bearer = format!("Bearer {token}");
    let from = |last: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
    for _ in 0..3 {
        let (_, status) = RawSocket::open(app.port, from(2), &[("Authorization", &bearer)], false).await;
        assert!(status.contains(" 101 "), "{status}");
    }
    // the fourth from 127.0.0.2 is refused, with a Retry-After
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from(2), 0)).unwrap();
    let stream = socket.connect(SocketAddr::from(([127, 0, 0, 1], app.port))).await.unwrap();
    let request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        app.ws_url(&format!("/ws?token={token}")),
    )
    .unwrap();
    match tokio_tungstenite::client_async(request, stream).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=10).contains(&retry), "Retry-After: {retry}");
            let body: Value = serde_json::from_slice(response.body().as_ref().unwrap()).unwrap();
            assert_eq!(body["error"], "too_many_handshakes");
        }
        other => panic!("expected 429, got {:?}", other.map(|(_, r)| r.status())),
    }
    // another address is not affected
    let (_, status) = RawSocket::open(app.port, from(3), &[("Authorization", &bearer)], false).await;
    assert!(status.contains(" 101 "), "{status}");
}

#[actix_web::test]
async fn first_message_auth_of_a_user_at_the_cap_closes_4008_and_frees_the_address() {
    let app = spawn_app_with("[ws]\nmax_connections_per_user = 1\nmax_unauthenticated_per_ip = 1").await;
    let (mut alice, _) = app.connect_as("alice").await;
    let url = app.ws_url("/ws");
    let (mut pending, _) = connect(&url, &[]).await.expect("opens unauthenticated");
    pending.send(json!({"type":"auth","token": sign("alice", 300, &[])})).await;
    assert_eq!(pending.expect_close().await, (4008, "too many connections for this user".to_owned()));
    // Gone: without this the server waits ws.close_timeout (5 s) for an answer, the whole of
    // the deadline below.
    drop(pending);
    alice.assert_alive().await;
    // Once that socket is gone, its address may open another, which bob authenticates.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut next = loop {
        match connect(&url, &[]).await {
            Ok((ws, _)) => break ws,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(refused) => panic!("the address's place was not freed: {refused:?}"),
        }
    };
    next.send(json!({"type":"auth","token": sign("bob", 300, &[])})).await;
    assert_eq!(next.next_of("welcome").await["user"], "bob");
}
