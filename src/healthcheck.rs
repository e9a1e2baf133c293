//! `authchat healthcheck`: one `GET /healthz` to this server, where its configuration says it
//! listens, over TLS when the listener does TLS, so a container image needs no HTTP client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::config::Settings;

/// Asks the server of `settings` for `/healthz`, giving up after `timeout`. The URL asked
/// when it answered 200; otherwise why not, in one line.
pub fn check(settings: &Settings, timeout: Duration) -> anyhow::Result<String> {
    let address = target(settings)?;
    let tls = settings.tls.files().map(|(cert, _)| crate::tls::trusting_own_certificate(cert)).transpose()?;
    let url = format!("{}://{address}/healthz", if tls.is_some() { "https" } else { "http" });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let status = runtime
        .block_on(async { tokio::time::timeout(timeout, get(address, tls)).await })
        .map_err(|_| anyhow::anyhow!("{url}: no answer within {}", humantime::format_duration(timeout)))?
        .with_context(|| url.clone())?;
    anyhow::ensure!(status == 200, "{url} answered {status}, not 200");
    Ok(url)
}

/// The configured host and port; a listener on all addresses is asked on loopback.
fn target(settings: &Settings) -> anyhow::Result<SocketAddr> {
    let port = settings.server.port;
    anyhow::ensure!(port != 0, "server.port is 0 (any free port), so there is no port to ask; set server.port");
    let host = match settings.server.host {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(SocketAddr::new(host, port))
}

/// The status code of `GET /healthz` at `address`.
async fn get(address: SocketAddr, tls: Option<rustls::ClientConfig>) -> anyhow::Result<u16> {
    let tcp = TcpStream::connect(address).await.context("cannot connect")?;
    let Some(config) = tls else {
        return status_of(tcp, address).await;
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = connector.connect(address.ip().into(), tcp).await.context("TLS handshake failed")?;
    status_of(stream, address).await
}

/// Sends the request and reads the status line of the answer (HTTP/1.1, the connection closed after).
async fn status_of(mut stream: impl AsyncRead + AsyncWrite + Unpin, address: SocketAddr) -> anyhow::Result<u16> {
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {address}\r\nUser-Agent: authchat-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.context("cannot send the request")?;
    let mut line = String::new();
    BufReader::new(stream.take(1024)).read_line(&mut line).await.context("cannot read the answer")?;
    line.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP answer: {:?}", line.trim_end()))
}
