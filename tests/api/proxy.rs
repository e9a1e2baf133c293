//! The production layer behind a proxy that terminates TLS: `tls.terminated_upstream = true`
//! is all it takes (the layer's `tls.cert` and `tls.key` are then not read), and an empty
//! `AUTHCHAT__TLS__CERT=` means "no path", never a file named "".

use authchat::config::{LoadOptions, Settings};

use crate::helpers::*;

/// `config/production.toml` as shipped, with what an operator must set, on a free local port.
fn production(extra_env: &[(&str, &str)]) -> Result<Settings, authchat::config::ConfigError> {
    let mut env = vec![
        ("AUTHCHAT__AUTH__SECRET", SECRET),
        ("AUTHCHAT__SERVER__ALLOWED_ORIGINS", "https://chat.example.com"),
        ("AUTHCHAT__SERVER__HOST", "127.0.0.1"),
        ("AUTHCHAT__SERVER__PORT", "0"),
        ("AUTHCHAT__SERVER__WORKERS", "1"),
        ("AUTHCHAT__SERVER__DRAIN_DELAY", "0s"),
    ];
    env.extend_from_slice(extra_env);
    Settings::load(&LoadOptions {
        env_name: Some("production".into()),
        config_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/config").into(),
        env_vars: Some(env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..LoadOptions::default()
    })
}

#[actix_web::test]
async fn production_behind_a_tls_terminating_proxy_needs_only_terminated_upstream() {
    let settings = production(&[("AUTHCHAT__TLS__TERMINATED_UPSTREAM", "true")])
        .expect("the production layer with terminated_upstream loads");
    assert!(settings.tls.files().is_none(), "the layer's certificate paths are not used behind a TLS proxy");
    let app = spawn_app_from(settings).await;
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200, "plain HTTP to the proxy");
    assert!(res.headers().get("strict-transport-security").is_none(), "HSTS is the proxy's business");
    let (status, config) = app.get_json("/api/config", None).await;
    assert_eq!((status, &config["mode"]), (200, &serde_json::json!("jwt")), "{config}");
}

#[actix_web::test]
async fn an_empty_tls_path_from_the_environment_means_no_path() {
    let empty = [("AUTHCHAT__TLS__CERT", ""), ("AUTHCHAT__TLS__KEY", "")];
    let mut behind_proxy = empty.to_vec();
    behind_proxy.push(("AUTHCHAT__TLS__TERMINATED_UPSTREAM", "true"));
    let app = spawn_app_from(production(&behind_proxy).expect("empty paths are no paths")).await;
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);

    // Without a proxy, empty paths are missing TLS, refused as such (not an I/O error on "").
    let err = production(&empty).expect_err("production without TLS is refused").to_string();
    assert!(err.contains("tls.cert") && err.contains("terminated_upstream"), "{err}");
    // Only one of them emptied: the message names what is missing.
    let err = production(&empty[..1]).expect_err("a key without a certificate").to_string();
    assert!(err.contains("tls.cert") && !err.contains("No such file"), "{err}");
}
