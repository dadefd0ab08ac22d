//! Certificates made at run time (rcgen): a certificate authority and a server certificate for
//! `localhost` and `127.0.0.1` signed by it. Shared by the TLS tests (`#[path]`) and
//! `examples/self_signed.rs`, which writes them for the browser and Node tests.

#![allow(dead_code)]

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA and a server certificate and key, as PEM and DER.
pub struct TestCertificates {
    /// The authority clients trust, PEM.
    pub ca_pem: String,
    /// The same, DER.
    pub ca_der: Vec<u8>,
    /// The server's certificate, PEM.
    pub cert_pem: String,
    /// The same, DER.
    pub cert_der: Vec<u8>,
    /// The server's private key (PKCS#8), PEM.
    pub key_pem: String,
    /// The same, DER.
    pub key_der: Vec<u8>,
}

/// A fresh CA, and a certificate for `localhost` and `127.0.0.1` it signed.
pub fn test_certificates() -> Result<TestCertificates, rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wsrelay test CA");
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "wsrelay test server");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    Ok(TestCertificates {
        ca_pem: ca.pem(),
        ca_der: ca.der().to_vec(),
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
    })
}
