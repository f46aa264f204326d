//! Server certificate pinning: the client accepts exactly the certificate whose SHA-256
//! fingerprint it pinned at `shelf login` (like ssh's known_hosts), or — logged in with
//! `--ca-file` — a certificate that chains to that CA and names the host (webpki). TLS 1.3
//! only; the handshake signature is verified against the certificate either way.

use crate::sync::LockOrRecover;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error, SignatureScheme};
use std::sync::{Arc, Mutex};

/// SHA-256 of a DER certificate as colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Normalises a user-typed fingerprint (any case, with or without colons).
pub fn normalise_fingerprint(fp: &str) -> String {
    let hex: String = fp
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

#[derive(Debug)]
pub struct PinnedVerifier {
    /// The pinned fingerprint; `None` accepts any certificate and records what it saw
    /// (only for a first login with `--accept-fingerprint` or an interactive prompt).
    pinned: Option<String>,
    /// The fingerprint the server presented.
    pub seen: Mutex<Option<String>>,
    provider: Arc<CryptoProvider>,
    /// CA trust instead of a pin.
    ca: Option<Arc<rustls::client::WebPkiServerVerifier>>,
}

impl PinnedVerifier {
    pub fn new(pinned: Option<String>) -> Arc<PinnedVerifier> {
        Arc::new(PinnedVerifier {
            pinned: pinned.map(|p| normalise_fingerprint(&p)),
            seen: Mutex::new(None),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            ca: None,
        })
    }

    /// Trusts certificates that chain to the CA certificates in the PEM file `ca`.
    pub fn with_ca(ca: &std::path::Path) -> Result<Arc<PinnedVerifier>, Error> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca).map_err(|e| {
            Error::General(format!("cannot read the CA file {}: {e}", ca.display()))
        })?;
        for cert in certs {
            let cert = cert.map_err(|e| {
                Error::General(format!("the CA file {} is not PEM: {e}", ca.display()))
            })?;
            roots.add(cert)?;
        }
        if roots.is_empty() {
            return Err(Error::General(format!(
                "the CA file {} holds no certificate",
                ca.display()
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| Error::General(format!("CA file {}: {e}", ca.display())))?;
        Ok(Arc::new(PinnedVerifier {
            pinned: None,
            seen: Mutex::new(None),
            provider,
            ca: Some(webpki),
        }))
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let fp = fingerprint(end_entity.as_ref());
        {
            let mut seen = self.seen.lock_or_recover();
            *seen = Some(fp.clone());
        }
        if let Some(ca) = &self.ca {
            return ca
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                .map_err(|e| {
                    Error::General(format!(
                        "the server's certificate is not trusted by the CA file ({e}); nothing was sent"
                    ))
                });
        }
        match &self.pinned {
            Some(p) if *p != fp => Err(Error::General(format!(
                "the server's certificate changed: pinned {p}, presented {fp}"
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::General("TLS 1.2 is not allowed".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS 1.3-only client config using `verifier`.
pub fn client_config(verifier: Arc<PinnedVerifier>) -> Result<Arc<rustls::ClientConfig>, Error> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .dangerous()
    .with_custom_certificate_verifier(verifier)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn normalises() {
        assert_eq!(normalise_fingerprint("ab:cd:EF"), "AB:CD:EF");
        assert_eq!(normalise_fingerprint("abcdef"), "AB:CD:EF");
    }
}
