//! TLS with rustls: the certificate chain and key come from PEM files (`tls.cert`, `tls.key`)
//! and are re-read on SIGHUP. A reload swaps the key pair used for new handshakes; connections
//! already open keep theirs, so live sockets are not dropped.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::ConfigError;

/// The current certificate and key, swappable while the server runs.
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    cert: PathBuf,
    key: PathBuf,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

impl CertStore {
    /// Reads both files; an unreadable or unparsable one is an error naming its config key and path.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, ConfigError> {
        let pair = read_pair(cert, key)?;
        Ok(Self { current: ArcSwap::from_pointee(pair), cert: cert.to_path_buf(), key: key.to_path_buf() })
    }

    /// Re-reads the files; on any error the current pair stays in use.
    pub fn reload(&self) -> Result<(), ConfigError> {
        self.current.store(Arc::new(read_pair(&self.cert, &self.key)?));
        Ok(())
    }

    /// A rustls configuration that asks this store for the certificate on every handshake.
    /// HTTP/1.1 only: actix serves WebSockets over HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, ConfigError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConfigError::invalid("tls.cert", format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(ConfigError::invalid("tls.cert", format!("{} holds no PEM certificate", cert.display())));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ConfigError::invalid("tls.key", format!("{}: {e}", key.display())))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|e| ConfigError::invalid("tls.key", format!("{}: unsupported key: {e}", key.display())))?;
    let pair = CertifiedKey::new(chain, signer);
    pair.keys_match().map_err(|_| {
        ConfigError::invalid("tls.key", format!("{} does not belong to the certificate in tls.cert", key.display()))
    })?;
    Ok(pair)
}
