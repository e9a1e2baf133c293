//! The client's address behind proxies: `Forwarded` (RFC 7239, its `for=`) and
//! `X-Forwarded-For` are believed only from a peer in `server.trusted_proxies`, and read from
//! the right, since each proxy appends the address it received from and only the hops it adds
//! can be trusted.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::{HeaderMap, HeaderName, FORWARDED, X_FORWARDED_FOR};

use crate::config::ProxyNet;

/// `server.trusted_proxies`, registered as app data for [`super::client_ip`].
#[derive(Debug, Clone)]
pub struct TrustedProxies(Vec<ProxyNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<ProxyNet>) -> Self {
        Self(networks)
    }

    fn trust(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The client of a request that came from `peer` with these headers.
    pub fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trust(peer) {
            return peer;
        }
        let values = |name: &HeaderName| -> Vec<&str> {
            // An unreadable value is one hop that names no address, which ends the walk.
            headers.get_all(name).map(|v| v.to_str().unwrap_or_default()).collect()
        };
        self.resolve(peer, &values(&FORWARDED), &values(&X_FORWARDED_FOR))
    }

    /// The client, from a trusted `peer`, given every `Forwarded` and `X-Forwarded-For` value
    /// in order. A proxy may set either header or both; a client can send the other one
    /// itself, which the proxy passes on untouched. So when both are present they must name
    /// the same client, or the request counts as the proxy's own (that address is then shared
    /// only by requests that carry disagreeing headers, which no honest proxy sends).
    fn resolve(&self, peer: IpAddr, forwarded: &[&str], x_forwarded_for: &[&str]) -> IpAddr {
        let by_forwarded = (!forwarded.is_empty()).then(|| {
            let elements = forwarded.iter().flat_map(|value| value.split(','));
            self.walk(peer, elements.map(forwarded_for))
        });
        let by_x_forwarded_for = (!x_forwarded_for.is_empty()).then(|| {
            let entries = x_forwarded_for.iter().flat_map(|value| value.split(','));
            self.walk(peer, entries.map(node_address))
        });
        match (by_forwarded, by_x_forwarded_for) {
            (Some(a), Some(b)) if a != b => peer,
            (Some(client), _) | (None, Some(client)) => client,
            (None, None) => peer,
        }
    }

    /// From the trusted `peer` leftwards through the hops: the first address that is not a
    /// trusted proxy. A hop with no usable address (`unknown`, an obfuscated name, garbage)
    /// ends the walk at the last trusted hop, which then stands for the client.
    fn walk(&self, peer: IpAddr, hops: impl DoubleEndedIterator<Item = Option<IpAddr>>) -> IpAddr {
        let mut client = peer;
        for hop in hops.rev() {
            let Some(ip) = hop else { break };
            client = ip.to_canonical();
            if !self.trust(client) {
                break;
            }
        }
        client
    }
}

/// The address in one `Forwarded` element's `for=` parameter (`for=192.0.2.7`,
/// `for="[2001:db8::1]:4711"`); none when it has no `for=` or it is not an address.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        node_address(value.trim().trim_matches('"'))
    })
}

/// An address as proxies write it: `192.0.2.7`, `192.0.2.7:4711`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn node_address(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    node.parse::<IpAddr>()
        .or_else(|_| node.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .or_else(|| node.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusting(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(networks.iter().map(|n| ProxyNet::try_from(n.to_string()).unwrap()).collect())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_are_read_as_proxies_write_them() {
        for (node, address) in [
            ("192.0.2.7", "192.0.2.7"),
            (" 192.0.2.7:4711 ", "192.0.2.7"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
        ] {
            assert_eq!(node_address(node), Some(ip(address)), "{node}");
        }
        for node in ["unknown", "_hidden", "", "192.0.2", "[192.0.2.7]x"] {
            assert_eq!(node_address(node), None, "{node}");
        }
        assert_eq!(forwarded_for("proto=https; For=\"[2001:db8::1]:4711\";by=10.0.0.1"), Some(ip("2001:db8::1")));
        assert_eq!(forwarded_for("by=10.0.0.1;proto=https"), None);
        assert_eq!(forwarded_for("for=unknown"), None);
    }

    #[test]
    fn the_client_is_the_right_most_address_that_is_not_a_trusted_proxy() {
        let proxies = trusting(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        let xff = |values: &[&str]| proxies.resolve(peer, &[], values);
        assert_eq!(xff(&["203.0.113.1"]), ip("203.0.113.1"));
        assert_eq!(xff(&["198.51.100.9, 203.0.113.1, 10.2.0.1"]), ip("203.0.113.1"), "forged left, trusted right");
        assert_eq!(xff(&["198.51.100.9", "203.0.113.1,10.2.0.1"]), ip("203.0.113.1"), "header lines in order");
        assert_eq!(xff(&["10.3.0.1, 10.2.0.1"]), ip("10.3.0.1"), "trusted all the way: the left-most");
        assert_eq!(xff(&["203.0.113.1, unknown, 10.2.0.1"]), ip("10.2.0.1"), "stops at the last trusted hop");
        assert_eq!(xff(&[""]), peer, "an unreadable value names no one");
        assert_eq!(xff(&["::ffff:203.0.113.1"]), ip("203.0.113.1"));
        assert_eq!(xff(&[]), peer, "no header: the proxy itself");
        let forwarded = proxies.resolve(peer, &["for=198.51.100.9, for=203.0.113.1;proto=https", "for=10.2.0.1"], &[]);
        assert_eq!(forwarded, ip("203.0.113.1"));
    }

    #[test]
    fn both_headers_must_agree_or_the_request_is_the_proxys() {
        let proxies = trusting(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        assert_eq!(proxies.resolve(peer, &["for=203.0.113.1"], &["203.0.113.1"]), ip("203.0.113.1"));
        // The proxy appended X-Forwarded-For; the client added a Forwarded of its own.
        assert_eq!(proxies.resolve(peer, &["for=198.51.100.9"], &["203.0.113.1"]), peer);
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, "203.0.113.1".parse().unwrap());
        headers.insert(FORWARDED, "for=203.0.113.1".parse().unwrap());
        assert_eq!(trusting(&[]).client_of(ip("192.0.2.7"), &headers), ip("192.0.2.7"));
        assert_eq!(trusting(&["10.0.0.0/8"]).client_of(ip("192.0.2.7"), &headers), ip("192.0.2.7"));
        assert_eq!(trusting(&["10.0.0.0/8"]).client_of(ip("::ffff:10.0.0.1"), &headers), ip("203.0.113.1"));
    }
}
