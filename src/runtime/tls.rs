//! Mutual TLS against a cluster CA: every node presents a certificate the CA signed and
//! accepts only peers that do.
//!
//! Node certificates carry the name [`CLUSTER_SERVER_NAME`] among their subject alternative
//! names: peers dial each other by address, and TLS checks the server's certificate against
//! that one cluster-wide name. What authenticates a peer is the CA's signature.

use std::{path::Path, sync::Arc};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::{
    RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

/// The server name every node certificate carries and every node dials.
pub const CLUSTER_SERVER_NAME: &str = "confmesh";

/// The ALPN protocols of a node that speaks up to protocol `newest`, newest first:
/// `confmesh/<newest>` down to `confmesh/<OLDEST_PROTOCOL_VERSION>`. The server picks the first
/// of its own list the client offered, so two nodes speak the newest version both know; a node
/// with no version in common fails the handshake (no application protocol).
pub(crate) fn alpn(newest: u8) -> Vec<Vec<u8>> {
    (crate::proto::wire::OLDEST_PROTOCOL_VERSION..=newest)
        .rev()
        .map(|v| format!("confmesh/{v}").into_bytes())
        .collect()
}

/// Why TLS material could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// PEM data held no usable certificate or key.
    #[error("{what}: {detail}")]
    Pem {
        /// What was being parsed.
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// rustls refused the material (for example a key that does not match the certificate).
    #[error("invalid TLS configuration: {0}")]
    Config(String),
    /// Generating a certificate failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
}

/// The TLS material of one node: the cluster CA to trust, and the node's own certificate
/// chain and private key. All PEM.
#[derive(Clone)]
pub struct TlsConfig {
    /// The CAs this node trusts: one, or, during a rotation, the old and the new.
    ca: Vec<CertificateDer<'static>>,
    /// CAs retired from handshakes whose endorsements still count (docs/PROTOCOL.md §8.8).
    retired: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Material from PEM text: the CA certificate (or, during a CA rotation, a bundle of the
    /// old and the new CA: peers of either are trusted), the node's certificate chain (leaf
    /// first), and its private key (PKCS#8, SEC1 or PKCS#1).
    ///
    /// # Errors
    ///
    /// [`TlsError::Pem`] if a part holds no certificate or key.
    pub fn from_pem(ca: &[u8], chain: &[u8], key: &[u8]) -> Result<TlsConfig, TlsError> {
        let pem = |what: &'static str| {
            move |e: rustls::pki_types::pem::Error| TlsError::Pem {
                what,
                detail: e.to_string(),
            }
        };
        let ca = CertificateDer::pem_slice_iter(ca)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem("CA certificate"))?;
        if ca.is_empty() {
            return Err(TlsError::Pem {
                what: "CA certificate",
                detail: "no certificate found".into(),
            });
        }
        let chain = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem("certificate chain"))?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                what: "certificate chain",
                detail: "no certificate found".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(pem("private key"))?;
        Ok(TlsConfig {
            ca,
            retired: Vec::new(),
            chain,
            key: Arc::new(key),
        })
    }

    /// Material from PEM files.
    ///
    /// # Errors
    ///
    /// [`TlsError::Read`] if a file cannot be read, otherwise as [`TlsConfig::from_pem`].
    pub fn from_files(ca: &Path, chain: &Path, key: &Path) -> Result<TlsConfig, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        TlsConfig::from_pem(&read(ca)?, &read(chain)?, &read(key)?)
    }

    /// Adds CAs retired from handshakes (PEM, one or more certificates): no peer of theirs
    /// is trusted any more, but the endorsements their node certificates made still count,
    /// so the versions of writers endorsed before a CA rotation keep verifying (docs/PROTOCOL.md
    /// §8.8).
    ///
    /// # Errors
    ///
    /// [`TlsError::Pem`] if `pem` holds no certificate.
    pub fn with_retired_ca(mut self, pem: &[u8]) -> Result<TlsConfig, TlsError> {
        let retired = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                what: "retired CA certificate",
                detail: e.to_string(),
            })?;
        if retired.is_empty() {
            return Err(TlsError::Pem {
                what: "retired CA certificate",
                detail: "no certificate found".into(),
            });
        }
        self.retired.extend(retired);
        Ok(self)
    }

    /// The cluster CAs' certificates (one, or the old and the new during a rotation).
    #[cfg(test)]
    pub(crate) fn cas(&self) -> &[CertificateDer<'static>] {
        &self.ca
    }

    /// Every CA whose node certificates' endorsements count: the trusted ones and the retired.
    pub(crate) fn endorsement_cas(&self) -> impl Iterator<Item = &CertificateDer<'static>> {
        self.ca.iter().chain(&self.retired)
    }

    /// The node's own certificate (the chain's first).
    pub(crate) fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.chain.first()
    }

    /// The node's private key.
    pub(crate) fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for ca in &self.ca {
            roots
                .add(ca.clone())
                .map_err(|e| TlsError::Config(e.to_string()))?;
        }
        Ok(Arc::new(roots))
    }

    /// The QUIC server side: TLS 1.3, client certificates required and checked against the CA.
    pub(crate) fn server_config(&self, newest: u8) -> Result<QuicServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = alpn(newest);
        QuicServerConfig::try_from(config).map_err(|e| TlsError::Config(e.to_string()))
    }

    /// The HTTP API's server side (the agent's `http_tls`): this node's certificate and key,
    /// TLS 1.3 or 1.2, ALPN `http/1.1`, no client certificate (API clients present tokens).
    /// Clients check the certificate with the cluster CA, so it must name the host or address
    /// they connect to (`confmesh cert node --ip/--dns`).
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`] if the key does not match the certificate.
    pub fn https_server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The QUIC client side: trusts only the CA, presents this node's certificate.
    pub(crate) fn client_config(&self, newest: u8) -> Result<QuicClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = alpn(newest);
        QuicClientConfig::try_from(config).map_err(|e| TlsError::Config(e.to_string()))
    }
}

/// A cluster certificate authority held in memory, to issue node certificates: for
/// development, tests and the `cert` command. Production keeps the CA key offline.
pub struct DevCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

/// A node certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// The certificate chain: the node certificate, then the CA certificate.
    pub chain_pem: String,
    /// The node's private key (PKCS#8).
    pub key_pem: String,
}

impl DevCa {
    /// A new CA with a fresh ECDSA P-256 key, named `name`.
    ///
    /// # Errors
    ///
    /// [`TlsError::Generate`] if key generation fails.
    pub fn generate(name: &str) -> Result<DevCa, TlsError> {
        let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().map_err(generate)?;
        let key_pem = key.serialize_pem();
        let cert = params.self_signed(&key).map_err(generate)?;
        Ok(DevCa {
            issuer: rcgen::Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    /// A CA loaded from its certificate and private key (PEM), as [`DevCa::cert_pem`] and
    /// [`DevCa::key_pem`] wrote them.
    ///
    /// # Errors
    ///
    /// [`TlsError::Generate`] if either does not parse or they do not match.
    #[cfg(feature = "agent")]
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<DevCa, TlsError> {
        let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let key = rcgen::KeyPair::from_pem(key_pem).map_err(generate)?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(cert_pem, key).map_err(generate)?;
        Ok(DevCa {
            issuer,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA's private key, PEM (PKCS#8). Keep it offline in production.
    pub fn key_pem(&self) -> String {
        self.key_pem.clone()
    }

    /// Issues a certificate for the node `name`, valid for both ends of a connection.
    ///
    /// # Errors
    ///
    /// [`TlsError::Generate`] if `name` is not a valid DNS name or signing fails.
    pub fn issue(&self, name: &str) -> Result<IssuedCert, TlsError> {
        self.issue_with(name, &[], &[])
    }

    /// Like [`DevCa::issue`], with extra subject alternative names: IP addresses and DNS names
    /// the node is known by (for tools that check them; peers dial by the cluster name).
    ///
    /// # Errors
    ///
    /// [`TlsError::Generate`] if a name is not a valid DNS name or signing fails.
    pub fn issue_with(
        &self,
        name: &str,
        ips: &[std::net::IpAddr],
        dns: &[String],
    ) -> Result<IssuedCert, TlsError> {
        let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let mut names = vec![CLUSTER_SERVER_NAME.to_string(), name.to_string()];
        names.extend(dns.iter().cloned());
        names.dedup();
        let mut params = rcgen::CertificateParams::new(names).map_err(generate)?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
        // The node's principal (docs/PROTOCOL.md §8.1).
        let uri = format!("{}{name}", super::certifier::NODE_URI);
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(uri).map_err(generate)?,
        ));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().map_err(generate)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        Ok(IssuedCert {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem()),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues an admin certificate for `name` (docs/PROTOCOL.md §8.7): an Ed25519 key, for
    /// client authentication, naming `confmesh:admin:<name>`. Its holder proves the policy
    /// entries it asks for (`confmesh acl`); it is not a node certificate.
    ///
    /// # Errors
    ///
    /// [`TlsError::Generate`] if `name` is not 1 to 120 letters, digits, `.`, `-`, `_`, `@`,
    /// or signing fails.
    pub fn issue_admin(&self, name: &str) -> Result<IssuedCert, TlsError> {
        let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
        crate::proto::trust::policy::Principal::one(crate::proto::trust::policy::Kind::Admin, name)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
        let uri = format!("{}{name}", super::certifier::ADMIN_URI);
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(uri).map_err(generate)?,
        ));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(generate)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        Ok(IssuedCert {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem()),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate for `name` and returns it as a ready [`TlsConfig`].
    ///
    /// # Errors
    ///
    /// As [`DevCa::issue`].
    pub fn node_config(&self, name: &str) -> Result<TlsConfig, TlsError> {
        let issued = self.issue(name)?;
        TlsConfig::from_pem(
            self.cert_pem().as_bytes(),
            issued.chain_pem.as_bytes(),
            issued.key_pem.as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_material_builds_both_quic_configs() {
        let ca = DevCa::generate("test CA").expect("ca");
        let config = ca.node_config("node-1").expect("node config");
        assert!(config.server_config(2).is_ok());
        assert_eq!(alpn(1), [b"confmesh/1".to_vec()]);
        assert_eq!(alpn(2), [b"confmesh/2".to_vec(), b"confmesh/1".to_vec()]);
        assert!(config.client_config(2).is_ok());
    }

    #[test]
    fn bad_pem_is_a_clear_error() {
        let err = TlsConfig::from_pem(b"nonsense", b"", b"").expect_err("must fail");
        assert!(
            matches!(
                err,
                TlsError::Pem {
                    what: "CA certificate",
                    ..
                }
            ),
            "{err}"
        );
        let ca = DevCa::generate("test CA").expect("ca");
        let err = TlsConfig::from_pem(ca.cert_pem().as_bytes(), b"", b"").expect_err("must fail");
        assert!(
            matches!(
                err,
                TlsError::Pem {
                    what: "certificate chain",
                    ..
                }
            ),
            "{err}"
        );
    }
}
