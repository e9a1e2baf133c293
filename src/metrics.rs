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
        for collector in [
            Box::new(connections_open.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(upgrades_accepted.clone()),
            Box::new(upgrades_refused.clone()),
            Box::new(closes.clone()),
            Box::new(messages_in.clone()),
            Box::new(messages_out.clone()),
            Box::new(expiry_lag.clone()),
            Box::new(jwks_reloads.clone()),
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
