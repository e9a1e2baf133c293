//! Many senders into one room at once: one order, seen by everyone, kept by history.

use std::collections::HashSet;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::helpers::*;

const SENDERS: usize = 50;
const PER_SENDER: usize = 3;
const TOTAL: usize = SENDERS * PER_SENDER;

/// What one socket saw of the room: `(id, from, text)` of each message in arrival order, and,
/// for a sender, the `(ref, id)` of each ack.
struct Seen {
    messages: Vec<(u64, String, String)>,
    acks: Vec<(String, u64)>,
}

/// Reads until `TOTAL` messages of the room and `acks` acks have come, skipping presence.
async fn read_all(ws: &mut WsClient, acks: usize) -> Seen {
    let mut seen = Seen { messages: Vec::new(), acks: Vec::new() };
    while seen.messages.len() < TOTAL || seen.acks.len() < acks {
        let event = ws.next_json().await;
        match event["type"].as_str() {
            Some("message") => {
                assert_eq!(event["room"], "race");
                let field = |name: &str| event[name].as_str().unwrap().to_owned();
                seen.messages.push((event["id"].as_u64().unwrap(), field("from"), field("text")));
            }
            Some("ack") => seen.acks.push((event["ref"].as_str().unwrap().to_owned(), event["id"].as_u64().unwrap())),
            Some("presence") => {}
            _ => panic!("unexpected {event}"),
        }
    }
    // Nothing more: no message twice.
    if let Some(Event::Json(extra)) = ws.recv_within(std::time::Duration::from_millis(200)).await {
        assert_ne!(extra["type"], "message", "a message after all {TOTAL}: {extra}");
    }
    seen
}

#[actix_web::test]
async fn fifty_concurrent_senders_one_order_for_every_member_and_history() {
    let app = spawn_app_with(&format!(
        "[server]\nworkers = 2\n[chat]\nhistory_size = {TOTAL}\n[ws]\nmax_unauthenticated_per_ip = 100"
    ))
    .await;
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let (mut ws, _) = app.connect_as(&format!("sender{i:02}")).await;
        ws.send(json!({"type":"join","room":"race"})).await;
        ws.next_of("joined").await;
        senders.push(ws);
    }
    let mut observers = Vec::new();
    for name in ["watcher-a", "watcher-b"] {
        let (mut ws, _) = app.connect_as(name).await;
        ws.send(json!({"type":"join","room":"race"})).await;
        ws.next_of("joined").await;
        observers.push(ws);
    }

    // Every sender sends at once, each without waiting for its acks, then every socket reads.
    let sends = senders.iter_mut().enumerate().map(|(i, ws)| async move {
        for n in 0..PER_SENDER {
            let text = format!("m-{i:02}-{n}");
            ws.send(json!({"type":"send","room":"race","text": text,"ref": text})).await;
        }
    });
    join_all(sends).await;
    let sender_reads = senders.iter_mut().map(|ws| read_all(ws, PER_SENDER));
    let observer_reads = observers.iter_mut().map(|ws| read_all(ws, 0));
    let (sender_seen, observer_seen) = tokio::join!(join_all(sender_reads), join_all(observer_reads));

    let order = &observer_seen[0].messages;
    let ids: Vec<u64> = order.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(ids, (1..=TOTAL as u64).collect::<Vec<_>>(), "ids count up by one, each once");
    let texts: HashSet<&str> = order.iter().map(|(_, _, text)| text.as_str()).collect();
    assert_eq!(texts.len(), TOTAL, "every message, each once");
    for (_, from, text) in order {
        assert_eq!(from.strip_prefix("sender"), text.get(2..4), "{text} is from {from}");
    }
    // Each sender's own messages keep the order it sent them in.
    for i in 0..SENDERS {
        let own: Vec<&str> =
            order.iter().map(|(_, _, t)| t.as_str()).filter(|t| t.starts_with(&format!("m-{i:02}-"))).collect();
        let sent: Vec<String> = (0..PER_SENDER).map(|n| format!("m-{i:02}-{n}")).collect();
        assert_eq!(own, sent, "sender {i}");
    }
    for (who, seen) in observer_seen.iter().chain(&sender_seen).enumerate() {
        assert_eq!(&seen.messages, order, "socket {who} saw another order");
    }
    // Each ack names the id its message got.
    for seen in &sender_seen {
        for (reference, id) in &seen.acks {
            assert_eq!(&order[*id as usize - 1].2, reference, "ack {reference} -> {id}");
        }
    }

    // History: the same order, fetched in pages of 100 from the newest back.
    let watcher = &mut observers[0];
    let mut history: Vec<Value> = Vec::new();
    let mut before: Option<u64> = None;
    while history.len() < TOTAL {
        let mut request = json!({"type":"history","room":"race","limit":100});
        if let Some(before) = before {
            request["before"] = json!(before);
        }
        watcher.send(request).await;
        let page = watcher.next_of("history").await["messages"].as_array().unwrap().clone();
        assert!(!page.is_empty(), "history ended after {} of {TOTAL}", history.len());
        before = page[0]["id"].as_u64();
        history.splice(0..0, page);
    }
    let from_history: Vec<(u64, String, String)> = history
        .iter()
        .map(|m| (m["id"].as_u64().unwrap(), m["from"].as_str().unwrap().into(), m["text"].as_str().unwrap().into()))
        .collect();
    assert_eq!(&from_history, order, "history returns the order the members saw");
}
