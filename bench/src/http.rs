//! The few plain HTTP/1.1 requests the tool makes (readiness, `/metrics`, tickets, operator
//! closes), written by hand over one connection each, and a Prometheus text parser.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream as StdTcpStream};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A request's answer: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// The request line and headers; `Connection: close`, so the answer ends with the connection.
fn head(method: &str, addr: SocketAddr, path: &str, bearer: Option<&str>) -> String {
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
}

fn parse_answer(raw: &[u8]) -> anyhow::Result<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("malformed HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {:?}", head.lines().next().unwrap_or_default()))?;
    let chunked = head.lines().any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Ok(Answer { status, body })
}

/// A chunked body, joined (the tool only reads small, whole answers).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// `GET path`, blocking, with a 10 s limit on the whole exchange.
pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Answer> {
    let mut stream = StdTcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(head("GET", addr, path, None).as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_answer(&raw)
}

/// The status of `GET path`, or none when nothing answers.
pub fn status(addr: SocketAddr, path: &str) -> Option<u16> {
    get(addr, path).ok().map(|a| a.status)
}

/// `method path` with an optional bearer token, from `source` when given (so a ticket is
/// fetched from the address its socket will come from), within 10 s.
pub async fn request(
    addr: SocketAddr,
    source: Option<IpAddr>,
    method: &str,
    path: &str,
    bearer: Option<&str>,
) -> anyhow::Result<Answer> {
    let exchange = async {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let mut stream = socket.connect(addr).await?;
        stream.write_all(head(method, addr, path, bearer).as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_answer(&raw)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await.context("no HTTP answer within 10 s")?
}

/// Prometheus text as `name{labels}` → value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(key, value)| Some((key.to_owned(), value.parse().ok()?)))
        .collect()
}

/// `GET /metrics`, parsed.
pub fn metrics(addr: SocketAddr) -> anyhow::Result<BTreeMap<String, f64>> {
    let answer = get(addr, "/metrics")?;
    if answer.status != 200 {
        anyhow::bail!("GET /metrics answered {}", answer.status);
    }
    Ok(parse_metrics(&answer.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_lines_with_labels_and_comments() {
        let text = "# HELP x y\n# TYPE x counter\nx_total 3\nlag_bucket{le=\"0.1\"} 7\nlag_sum 0.25\nbroken\n";
        let m = parse_metrics(text);
        assert_eq!(m.get("x_total"), Some(&3.0));
        assert_eq!(m.get("lag_bucket{le=\"0.1\"}"), Some(&7.0));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn answers_plain_and_chunked() {
        let plain = parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").unwrap();
        assert_eq!(plain, Answer { status: 200, body: "ok".into() });
        let chunked =
            parse_answer(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!(chunked, Answer { status: 201, body: "abcde".into() });
        assert!(parse_answer(b"garbage").is_err());
    }
}
