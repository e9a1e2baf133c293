//! Node identity: every server process names itself, in `welcome` and the admin API, so that
//! several nodes behind one load balancer (issue 12) can be told apart. An explicit
//! `server.node_id` is used as is; without one, two servers on one host (or in one process)
//! still get different names.

use crate::helpers::*;

/// The node name a server gives in `welcome` and in `/admin/stats`, which must agree.
async fn node_of(app: &TestApp) -> String {
    let (_ws, welcome) = app.connect_as("alice").await;
    let (status, stats) = app.get_json("/admin/stats", Some(&sign("admin", 300, &["admin"]))).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(welcome["node"], stats["node"], "welcome and the admin API name the same node");
    welcome["node"].as_str().expect("a node name").to_owned()
}

#[actix_web::test]
async fn two_servers_without_a_node_id_get_different_ones() {
    let first = spawn_app_with("[server]\nnode_id = \"\"").await;
    let second = spawn_app_with("[server]\nnode_id = \"\"").await;
    let (a, b) = (node_of(&first).await, node_of(&second).await);
    assert!(!a.is_empty() && !b.is_empty());
    assert_ne!(a, b, "two processes (here, two servers of one process) on one host must not share a name");
}

#[actix_web::test]
async fn an_explicit_node_id_is_used_as_is() {
    let app = spawn_app_with("[server]\nnode_id = \"eu-west-1a\"").await;
    assert_eq!(node_of(&app).await, "eu-west-1a");
}
