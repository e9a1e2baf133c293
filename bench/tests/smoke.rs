//! A few seconds of every scenario against authchat started in this process, with small
//! numbers: proves the tool and the server still speak the same protocol. Not a benchmark.

use authchat_bench::client::{Carrier, ClientArgs};
use authchat_bench::scenario::{churn, connect, expiry, fanout, hold, slow};
use authchat_bench::target::{start_in_process, Launch, Server};

const SECRET: &str = "bench-smoke-secret-0123456789abcdef0123456789";

fn server() -> Server {
    start_in_process(&Launch::single(SECRET, 1)).expect("authchat starts in process")
}

fn client() -> ClientArgs {
    ClientArgs { sources: 4, client_threads: 1 }
}

#[test]
fn connect_opens_sockets_with_every_carrier() {
    let server = server();
    let options = connect::Options {
        connections: 20,
        concurrency: 5,
        carriers: vec![Carrier::Query, Carrier::Header, Carrier::Subprotocol, Carrier::Ticket, Carrier::FirstMessage],
    };
    let reports = connect::run(&server, SECRET, "hs1", &client(), &options).unwrap();
    server.stop();
    assert_eq!(reports.len(), 5);
    for r in reports {
        assert_eq!((r.opened, r.failed.len()), (20, 0), "{r}");
    }
}

#[test]
fn fanout_delivers_every_message_once() {
    let server = server();
    let options = fanout::Options { members: 20, messages: 20, senders: 2, ..fanout::Options::default() };
    let summary = fanout::run(&[server.addr], SECRET, "hs1", &client(), &options, "smoke").unwrap();
    server.stop();
    assert!(summary.ok(), "{summary}");
    assert_eq!(summary.deliveries, 400);
}

#[test]
fn expiry_sees_every_socket_closed_with_4001_at_exp() {
    let server = server();
    let options = expiry::Options {
        connections: 20,
        concurrency: 10,
        per_user: 5,
        spread: 1,
        exp_in: Some(2),
        close_timeout: 5,
        poll_metrics_ms: 0,
        join: Some("expiry".into()),
    };
    let report = expiry::run(&server, SECRET, "hs1", &client(), &options).unwrap();
    server.stop();
    assert!(report.ok(), "{report}");
    assert!(report.server_side.contains("count 20"), "{report}");
}

#[test]
fn hold_churn_and_slow_run_to_the_end() {
    let server = server();
    let held = hold::Options {
        connections: 30,
        concurrency: 10,
        join: Some("idle".into()),
        settle: 0,
        warm_up: 5,
        window_ms: 100,
    };
    let report = hold::run(&server, SECRET, "hs1", &client(), &held).unwrap();
    assert_eq!((report.opened, report.failed.len()), (30, 0), "{report}");

    let cycling = churn::Options { concurrency: 2, duration: 1, join: Some("churn".into()), carrier: Carrier::Query };
    let report = churn::run(&server, SECRET, "hs1", &client(), &cycling).unwrap();
    assert!(report.cycles > 0 && report.failed.is_empty(), "{report}");

    let slow_members = slow::Options {
        members: 6,
        slow: 2,
        senders: 1,
        messages: 20,
        rate: 0.0,
        size: 100,
        receive_buffer: 4096,
        drain: 1,
        timeout: 5,
    };
    let report = slow::run(&server, SECRET, "hs1", &client(), &slow_members).unwrap();
    server.stop();
    assert_eq!(report.delivered, report.expected, "{report}");
    // Nothing piled up: the slow members get everything once they read.
    assert_eq!(report.slow_received.min, 20.0, "{report}");
}
