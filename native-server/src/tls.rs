//! TLS: a rustls server configuration from PEM files, and the acceptor in front of HTTP.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS configuration for [`ServerConfig::tls`](crate::ServerConfig::tls) from a PEM
/// certificate chain (the server's certificate first, then intermediates) and a PEM private
/// key (PKCS#8, PKCS#1 or SEC1), with rustls's safe defaults (TLS 1.2 and 1.3) and the
/// `ring` crypto provider. Fails with a message naming the file when either cannot be read
/// or does not match the other.
pub fn tls_config(
    cert_chain: impl AsRef<Path>,
    private_key: impl AsRef<Path>,
) -> io::Result<Arc<rustls::ServerConfig>> {
    let (cert_path, key_path) = (cert_chain.as_ref(), private_key.as_ref());
    let invalid = |path: &Path, what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {what}", path.display()),
        )
    };
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(|error| invalid(cert_path, error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(cert_path, error.to_string()))?;
    if chain.is_empty() {
        return Err(invalid(cert_path, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|error| invalid(key_path, error.to_string()))?;
    tls_config_from_der(chain, key).map_err(|error| invalid(key_path, error.to_string()))
}

/// [`tls_config`] from certificates and a key already in memory (DER).
pub fn tls_config_from_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // WebSocket upgrades are HTTP/1.1 requests.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
