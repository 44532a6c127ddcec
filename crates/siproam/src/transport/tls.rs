//! TLS configuration (rustls with the `ring` provider).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsConfigError;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How outgoing TLS connections verify servers. The server's certificate
/// is always verified; what varies is whom it must chain to.
#[derive(Clone)]
pub struct TlsClientConfig {
    inner: Arc<ClientConfig>,
}

impl fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientConfig").finish_non_exhaustive()
    }
}

impl TlsClientConfig {
    /// Trusts the Mozilla root certificates built into `webpki-roots` (no
    /// system store is read). The default.
    pub fn with_webpki_roots() -> Result<TlsClientConfig, TlsConfigError> {
        TlsClientConfig::with_roots(Vec::new(), true)
    }

    /// Trusts the given CA certificates (DER), and the Mozilla roots too if
    /// `and_webpki_roots`.
    pub fn with_roots(
        cas: Vec<CertificateDer<'static>>,
        and_webpki_roots: bool,
    ) -> Result<TlsClientConfig, TlsConfigError> {
        let mut roots = RootCertStore::empty();
        if and_webpki_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for ca in cas {
            roots.add(ca)?;
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClientConfig {
            inner: Arc::new(config),
        })
    }

    /// Trusts the CA certificates of a PEM file, and the Mozilla roots too
    /// if `and_webpki_roots`.
    pub fn with_ca_pem_file(
        path: impl AsRef<Path>,
        and_webpki_roots: bool,
    ) -> Result<TlsClientConfig, TlsConfigError> {
        let cas = CertificateDer::pem_file_iter(path)?.collect::<Result<Vec<_>, _>>()?;
        if cas.is_empty() {
            return Err(TlsConfigError::NoCertificate);
        }
        TlsClientConfig::with_roots(cas, and_webpki_roots)
    }

    /// Uses a rustls configuration as it is (client certificates, custom
    /// verifiers, …).
    pub fn from_rustls(config: Arc<ClientConfig>) -> TlsClientConfig {
        TlsClientConfig { inner: config }
    }

    pub(super) fn into_rustls(self) -> Arc<ClientConfig> {
        self.inner
    }
}

/// The certificate and key TLS listeners present.
#[derive(Clone)]
pub struct TlsServerConfig {
    inner: Arc<ServerConfig>,
}

impl fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerConfig").finish_non_exhaustive()
    }
}

impl TlsServerConfig {
    /// A certificate chain (leaf first) and its private key, in DER. Client
    /// certificates are not asked for.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsServerConfig, TlsConfigError> {
        if chain.is_empty() {
            return Err(TlsConfigError::NoCertificate);
        }
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(TlsServerConfig {
            inner: Arc::new(config),
        })
    }

    /// A certificate chain (leaf first) and a private key (PKCS#8, PKCS#1
    /// or SEC1), in PEM.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<TlsServerConfig, TlsConfigError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem).collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)?;
        TlsServerConfig::from_der(chain, key)
    }

    /// Like [`TlsServerConfig::from_pem`], from files.
    pub fn from_pem_files(
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsServerConfig, TlsConfigError> {
        let chain = CertificateDer::pem_file_iter(chain)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(key)?;
        TlsServerConfig::from_der(chain, key)
    }

    /// Uses a rustls configuration as it is (client authentication, …).
    pub fn from_rustls(config: Arc<ServerConfig>) -> TlsServerConfig {
        TlsServerConfig { inner: config }
    }

    pub(super) fn into_rustls(self) -> Arc<ServerConfig> {
        self.inner
    }
}

/// What an outgoing TLS connection verified of its server: the name it
/// asked for and the end-entity certificate that passed. Empty for TCP
/// and for incoming connections (whose peer was never authenticated).
#[derive(Debug, Clone, Default)]
pub(super) struct VerifiedServer {
    /// The name the certificate was checked against (`None`: the remote
    /// IP address).
    pub(super) name: Option<String>,
    /// The server's end-entity certificate.
    pub(super) certificate: Option<CertificateDer<'static>>,
}

impl VerifiedServer {
    /// Whether the connection serves `name`: the name it verified, or a
    /// name a subject alternative name of its certificate covers (RFC 5922
    /// §7.2, RFC 6125 §6.4: a wildcard only as the whole left-most label,
    /// matching exactly one label) — the check a new handshake for `name`
    /// would make, by rustls's own verifier.
    pub(super) fn serves(&self, name: Option<&str>) -> bool {
        if self.name.as_deref() == name {
            return true;
        }
        match (name, &self.certificate) {
            (Some(name), Some(cert)) => certificate_covers(cert, name),
            _ => false,
        }
    }
}

/// Whether a subject alternative name of `cert` covers `name` (a DNS name
/// or an IP address in text form).
pub(super) fn certificate_covers(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(server_name) = rustls_pki_types::ServerName::try_from(name) else {
        return false;
    };
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(cert) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &server_name).is_ok()
}
