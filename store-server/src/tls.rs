//! TLS: a self-signed certificate made at `init` (rcgen), its SHA-256 fingerprint (what
//! clients pin, shown like ssh's host key), and a rustls server config that speaks TLS 1.3 only.

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// A new self-signed certificate and key, as PEM.
pub fn generate(hostnames: &[String]) -> anyhow::Result<(String, String)> {
    let mut names = vec!["localhost".to_string(), "shelf".to_string()];
    names.extend(hostnames.iter().cloned());
    let ck = rcgen::generate_simple_self_signed(names).context("generating the certificate")?;
    Ok((ck.cert.pem(), ck.key_pair.serialize_pem()))
}

/// SHA-256 of a DER certificate as colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs: Result<Vec<_>, _> =
        rustls::pki_types::pem::PemObject::pem_slice_iter(&pem).collect();
    let certs = certs.with_context(|| format!("parsing {}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", path.display());
    }
    Ok(certs)
}

pub fn fingerprint_of_file(path: &Path) -> anyhow::Result<String> {
    Ok(fingerprint(load_certs(path)?[0].as_ref()))
}

/// The server's TLS config: TLS 1.3 only, ring as the crypto provider.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = load_certs(cert)?;
    let key_pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    let key = <PrivateKeyDer as rustls::pki_types::pem::PemObject>::from_pem_slice(&key_pem)
        .with_context(|| format!("parsing {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}
