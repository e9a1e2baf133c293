//! TLS with rustls: the certificate chain and key come from PEM files (`tls.cert`, `tls.key`)
//! and are re-read on SIGHUP. A reload swaps the key pair used for new handshakes; connections
//! already open keep theirs, so live sockets are not dropped. Also the client side of
//! `authchat healthcheck`, which trusts exactly the server's own certificate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, OtherError, SignatureScheme};

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

/// A client configuration that accepts exactly the certificate in `cert` (its first one): the
/// server's own, whatever names it carries and whoever issued it (a self-signed CA certificate
/// for the public name, say), so a process can talk to its own listener on a loopback address.
pub fn trusting_own_certificate(cert: &Path) -> Result<rustls::ClientConfig, ConfigError> {
    let own = read_chain(cert)?.swap_remove(0);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        OwnCertificate { own, file: cert.to_path_buf(), algorithms: provider.signature_verification_algorithms };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts one certificate, byte for byte; the handshake signatures are still checked, so the
/// peer holds its key.
#[derive(Debug)]
struct OwnCertificate {
    own: CertificateDer<'static>,
    file: PathBuf,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for OwnCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.own.as_ref() {
            return Ok(ServerCertVerified::assertion());
        }
        let why = format!(
            "the server presented another certificate than tls.cert ({}); if that file was replaced, \
             send the server SIGHUP to load it",
            self.file.display()
        );
        Err(rustls::Error::Other(OtherError(Arc::new(std::io::Error::other(why)))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The certificates of a PEM file, at least one.
fn read_chain(cert: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConfigError::invalid("tls.cert", format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(ConfigError::invalid("tls.cert", format!("{} holds no PEM certificate", cert.display())));
    }
    Ok(chain)
}

fn read_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, ConfigError> {
    let chain = read_chain(cert)?;
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
