//! Prometheus metrics, rendered in the text format at `GET /metrics`.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Every metric the server exports. Cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    pub connections_open: IntGauge,
    /// Label `method`: how the socket authenticated.
    pub upgrades_accepted: IntCounterVec,
    /// Label `reason`: the `error` code of the refusal.
    pub upgrades_refused: IntCounterVec,
    /// Label `code`: the close code a connection ended with (1006 when it just dropped).
    pub closes: IntCounterVec,
    pub messages_in: IntCounter,
    pub messages_out: IntCounter,
    /// Seconds from a token's (or session's) end to its socket acting on the close, measured
    /// per socket.
    pub expiry_lag: Histogram,
    /// JWKS file re-reads, by outcome (`ok`, `failed`): a failed one keeps the previous keys.
    pub jwks_reloads: IntCounterVec,
    /// Fetches of the identity provider's keys over HTTPS, by what asked (`start`, `schedule`,
    /// `unknown_kid`, `sighup`): a flood of made-up `kid`s shows here, held to one fetch per
    /// `auth.jwks_min_refresh`.
    pub jwks_fetches: IntCounterVec,
    /// Fetches that brought no keys (unreachable, an error status, not a usable key set): the
    /// keys in use stay.
    pub jwks_refresh_failures: IntCounter,
    /// Times the Redis subscription was (re)established (several nodes).
    pub cluster_resubscriptions: IntCounter,
    /// Dead nodes whose users this node took out of presence.
    pub cluster_nodes_reaped: IntCounter,
    /// Messages refused as `unavailable` because fewer than `redis.ack_replicas` held them in time.
    pub cluster_unreplicated: IntCounter,
    /// Room refills from Redis history (after joining, a gap, or a resubscription).
    pub cluster_refills: IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("authchat".into()), None).expect("valid prefix");
        let connections_open = IntGauge::new("connections_open", "WebSocket connections open now").unwrap();
        let upgrades_accepted =
            IntCounterVec::new(Opts::new("upgrades_accepted_total", "WebSocket upgrades accepted"), &["method"])
                .unwrap();
        let upgrades_refused =
            IntCounterVec::new(Opts::new("upgrades_refused_total", "WebSocket upgrades refused"), &["reason"]).unwrap();
        let closes = IntCounterVec::new(Opts::new("closes_total", "WebSocket connections ended"), &["code"]).unwrap();
        let messages_in = IntCounter::new("messages_in_total", "Messages received from clients").unwrap();
        let messages_out = IntCounter::new("messages_out_total", "Messages sent to clients").unwrap();
        let expiry_lag = Histogram::with_opts(
            HistogramOpts::new(
                "expiry_close_lag_seconds",
                "Delay from a token's exp to its socket closing, per socket",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
        )
        .unwrap();
        let jwks_reloads =
            IntCounterVec::new(Opts::new("jwks_reloads_total", "JWKS file re-reads, by outcome"), &["outcome"])
                .unwrap();
        let jwks_fetches = IntCounterVec::new(
            Opts::new("jwks_fetches_total", "Fetches of the identity provider's keys over HTTPS, by reason"),
            &["reason"],
        )
        .unwrap();
        let jwks_refresh_failures = IntCounter::new(
            "jwks_refresh_failures_total",
            "Fetches of the identity provider's keys that failed (the keys in use stay)",
        )
        .unwrap();
        let cluster_resubscriptions =
            IntCounter::new("cluster_resubscriptions_total", "Times the Redis subscription was established").unwrap();
        let cluster_nodes_reaped =
            IntCounter::new("cluster_nodes_reaped_total", "Dead nodes taken out of presence by this node").unwrap();
        let cluster_unreplicated = IntCounter::new(
            "cluster_unreplicated_total",
            "Messages answered unavailable: fewer than redis.ack_replicas replicas held them in time",
        )
        .unwrap();
        let cluster_refills = IntCounter::new("cluster_refills_total", "Rooms refilled from Redis history").unwrap();
        for collector in [
            Box::new(connections_open.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(upgrades_accepted.clone()),
            Box::new(upgrades_refused.clone()),
            Box::new(closes.clone()),
            Box::new(messages_in.clone()),
            Box::new(messages_out.clone()),
            Box::new(expiry_lag.clone()),
            Box::new(jwks_reloads.clone()),
            Box::new(jwks_fetches.clone()),
            Box::new(jwks_refresh_failures.clone()),
            Box::new(cluster_resubscriptions.clone()),
            Box::new(cluster_nodes_reaped.clone()),
            Box::new(cluster_unreplicated.clone()),
            Box::new(cluster_refills.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        Self {
            registry,
            connections_open,
            upgrades_accepted,
            upgrades_refused,
            closes,
            messages_in,
            messages_out,
            expiry_lag,
            jwks_reloads,
            jwks_fetches,
            jwks_refresh_failures,
            cluster_resubscriptions,
            cluster_nodes_reaped,
            cluster_unreplicated,
            cluster_refills,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
