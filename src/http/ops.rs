//! Health, readiness and metrics for operators and load balancers.

use actix_web::{web, HttpResponse};

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

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(metrics.render())
}
