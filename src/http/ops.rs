//! Health, readiness and metrics for operators and load balancers.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::ApiError;
use crate::cluster::Health;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::Stores;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 503 once draining starts, or while the store does not answer, so a load
/// balancer stops routing here.
pub async fn readyz(state: web::Data<AppState>, stores: web::Data<Stores>, fleet: web::Data<Fleet>) -> HttpResponse {
    if state.is_draining() {
        return HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": "draining" }));
    }
    // Several nodes: commands working is not enough; the subscription must deliver (its probes
    // come back) and the heartbeat must be fresh, or this node is cut off from the others.
    if let Some(health) = fleet.health().filter(|h| *h != Health::Ready) {
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "status": health.as_str(), "store": stores.backend }));
    }
    match stores.health.ping().await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready", "store": stores.backend })),
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "status": "store_unavailable", "store": stores.backend })),
    }
}

/// `GET /metrics`: Prometheus text format. On its own listener (`metrics.listen`), to anyone
/// who can reach that.
pub async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(metrics.render())
}

/// `GET /metrics` on the main port (no `metrics.listen`): only for requests from this host
/// that no proxy passed on. A proxy on this host connects from loopback too, so the headers
/// proxies add are what tell its requests apart; the client's own address is not asked, since
/// a trusted proxy could name any.
pub async fn local_metrics(req: HttpRequest, metrics: web::Data<Metrics>) -> Result<HttpResponse, ApiError> {
    let loopback = req.peer_addr().is_some_and(|peer| peer.ip().to_canonical().is_loopback());
    let proxied = [header::FORWARDED, header::X_FORWARDED_FOR, header::HeaderName::from_static("x-real-ip")]
        .iter()
        .any(|name| req.headers().contains_key(name));
    if !loopback || proxied {
        return Err(ApiError::ForbiddenWithCode {
            code: "metrics_local_only",
            message: "GET /metrics answers only requests from this host that no proxy passed on; \
                      set metrics.listen to serve it on an address of its own",
        });
    }
    Ok(self::metrics(metrics).await)
}
