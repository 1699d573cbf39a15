//! Endorsements against the cluster CA (docs/PROTOCOL.md §7.2): the runtime's
//! [`Certifier`], and the making of a writer's endorsement
//! with the node's TLS key.
//!
//! An endorsement carries the node's certificate (DER) and a signature, by the certificate's
//! key, over the writer's public key and id. It is valid when the certificate chains to the
//! CA (webpki, as the TLS handshake checks peers, client-auth usage), was valid when the
//! endorsement was written (its version's timestamp, so every replica judges it the same, at
//! any time), and its key made the signature (ECDSA P-256, the key every node certificate
//! `DevCa` issues has). Certificates issued under intermediates are not supported yet: the
//! endorsement carries the leaf only.

use std::time::Duration;

use rustls::{
    SignatureScheme,
    pki_types::{CertificateDer, TrustAnchor, UnixTime},
};

use ed25519_zebra::VerificationKey;

use super::{
    tls::{CLUSTER_SERVER_NAME, TlsConfig, TlsError},
    verifier::Prechecked,
};
use bytes::Bytes;

use crate::proto::{
    AuthorProof, Payload, VClock, Version,
    trust::{Certifier, Endorsement, WriterKey, author_signed_bytes},
    wire::Message,
};

/// Checks endorsements against the cluster CAs (the trusted ones and the retired), and
/// signatures in batches on every core (`verifier.rs`).
#[derive(Debug)]
pub struct CaCertifier {
    anchors: Vec<TrustAnchor<'static>>,
    prechecked: Prechecked,
}

impl CaCertifier {
    /// A certifier for the CAs `tls` trusts, and those it retired.
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`] if a CA certificate does not parse as a trust anchor.
    pub fn new(tls: &TlsConfig) -> Result<CaCertifier, TlsError> {
        let anchors = tls
            .endorsement_cas()
            .map(|ca| {
                webpki::anchor_from_trusted_cert(ca)
                    .map(|a| a.to_owned())
                    .map_err(|e| TlsError::Config(format!("the CA certificate: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CaCertifier {
            anchors,
            prechecked: Prechecked::default(),
        })
    }

    /// Checks the signatures `message` carries ahead of the judge, on this thread (a
    /// connection reader's, off the node task): see `verifier.rs`.
    pub(crate) fn precheck(&self, message: &Message) {
        self.prechecked.precheck(message.versions().as_slice());
    }
}

impl Certifier for CaCertifier {
    fn certifies(&self, certificate: &[u8], message: &[u8], signature: &[u8], at_ms: u64) -> bool {
        let der = CertificateDer::from(certificate);
        let Ok(cert) = webpki::EndEntityCert::try_from(&der) else {
            return false;
        };
        let time = UnixTime::since_unix_epoch(Duration::from_millis(at_ms));
        cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &[],
            time,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .is_ok()
            && cert
                .verify_signature(webpki::ring::ECDSA_P256_SHA256, message, signature)
                .is_ok()
    }

    fn verify_version(&self, public: &VerificationKey, version: &Version) -> bool {
        self.prechecked.verify(public, version)
    }

    /// The node's name: its URI name `confmesh:node:NAME` (what `confmesh cert node` and
    /// `DevCa` issue), else, for certificates made by other tools, its first DNS name other
    /// than the cluster's server name. A certificate naming an admin names no node.
    fn node_name(&self, certificate: &[u8]) -> Option<String> {
        node_name(certificate)
    }

    /// An admin certificate is one of the CA's, for client authentication, valid at `at_ms`,
    /// with an Ed25519 key and the URI name `confmesh:admin:NAME` (`confmesh cert admin`).
    fn admin(
        &self,
        certificate: &[u8],
        message: &[u8],
        signature: &[u8; 64],
        at_ms: u64,
    ) -> Option<String> {
        let der = CertificateDer::from(certificate);
        let cert = webpki::EndEntityCert::try_from(&der).ok()?;
        let name = cert
            .valid_uri_names()
            .find_map(|u| u.strip_prefix(ADMIN_URI))?
            .to_owned();
        let time = UnixTime::since_unix_epoch(Duration::from_millis(at_ms));
        cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &[],
            time,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .ok()?;
        cert.verify_signature(webpki::ring::ED25519, message, signature)
            .ok()?;
        Some(name)
    }

    fn prepare(&self, items: &[(VerificationKey, &Version)]) {
        self.prechecked.prepare(items);
    }
}

/// The name of the node `certificate` (DER) names, unchecked: its URI name
/// `confmesh:node:NAME`, else its first DNS name other than the cluster's server name; none
/// for an admin certificate (docs/PROTOCOL.md §8.1).
pub fn node_name(certificate: &[u8]) -> Option<String> {
    let der = CertificateDer::from(certificate);
    let cert = webpki::EndEntityCert::try_from(&der).ok()?;
    if cert.valid_uri_names().any(|u| u.starts_with(ADMIN_URI)) {
        return None;
    }
    if let Some(name) = cert
        .valid_uri_names()
        .find_map(|u| u.strip_prefix(NODE_URI))
    {
        return Some(name.to_owned());
    }
    cert.valid_dns_names()
        .find(|name| *name != CLUSTER_SERVER_NAME)
        .map(str::to_owned)
}

/// The URI name that makes a certificate an admin's: `confmesh:admin:NAME`.
pub const ADMIN_URI: &str = "confmesh:admin:";

/// The URI name that names a certificate's node: `confmesh:node:NAME`.
pub const NODE_URI: &str = "confmesh:node:";

/// An admin's certificate and key (`confmesh cert admin`): what proves a policy entry's
/// author (docs/PROTOCOL.md §8.7). The key never leaves the holder: the node is handed the
/// proof only.
pub struct AdminKey {
    certificate: Vec<u8>,
    name: String,
    key: rcgen::KeyPair,
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl AdminKey {
    /// Reads an admin certificate (PEM, the first certificate of the file) and its key
    /// (PKCS#8 PEM, Ed25519).
    ///
    /// # Errors
    ///
    /// [`TlsError::Pem`] or [`TlsError::Config`] if either does not parse, the certificate
    /// names no admin, or the key is not the certificate's.
    pub fn from_pem(chain: &[u8], key: &[u8]) -> Result<AdminKey, TlsError> {
        use rustls::pki_types::pem::PemObject;
        let certificate = CertificateDer::pem_slice_iter(chain)
            .next()
            .ok_or_else(|| TlsError::Config("no certificate in the admin certificate file".into()))?
            .map_err(|e| TlsError::Pem {
                what: "admin certificate",
                detail: e.to_string(),
            })?;
        let cert = webpki::EndEntityCert::try_from(&certificate)
            .map_err(|e| TlsError::Config(format!("the admin certificate: {e}")))?;
        let name = cert
            .valid_uri_names()
            .find_map(|u| u.strip_prefix(ADMIN_URI))
            .ok_or_else(|| {
                TlsError::Config(format!(
                    "not an admin certificate: it has no {ADMIN_URI}NAME"
                ))
            })?
            .to_owned();
        let key_text = std::str::from_utf8(key)
            .map_err(|_| TlsError::Config("the admin key is not PEM text".into()))?;
        let key = rcgen::KeyPair::from_pem(key_text)
            .map_err(|e| TlsError::Config(format!("the admin key: {e}")))?;
        let probe = b"confmesh admin key check";
        let signature = rcgen::SigningKey::sign(&key, probe)
            .map_err(|e| TlsError::Config(format!("the admin key cannot sign: {e}")))?;
        cert.verify_signature(webpki::ring::ED25519, probe, &signature)
            .map_err(|_| {
                TlsError::Config("the admin key is not the certificate's Ed25519 key".into())
            })?;
        Ok(AdminKey {
            certificate: certificate.to_vec(),
            name,
            key,
        })
    }

    /// The principal it proves: `admin:NAME`.
    pub fn principal(&self) -> String {
        format!("admin:{}", self.name)
    }

    /// Its proof of a policy entry under `key` (the node's next entry key) with `payload` (an
    /// encoded rule), asked for in `context`.
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`] if signing fails.
    pub fn prove_rule(
        &self,
        key: &crate::proto::Key,
        payload: &Payload,
        context: &VClock,
    ) -> Result<AuthorProof, TlsError> {
        let message = author_signed_bytes(key.as_str(), payload, &self.principal(), context);
        let signature = rcgen::SigningKey::sign(&self.key, &message)
            .map_err(|e| TlsError::Config(format!("signing the proof: {e}")))?;
        let signature: [u8; 64] = signature
            .try_into()
            .map_err(|_| TlsError::Config("an Ed25519 signature is 64 bytes".into()))?;
        Ok(AuthorProof {
            signature,
            certificate: Some(Bytes::from(self.certificate.clone())),
        })
    }
}

/// The endorsement of `key` by the node `tls` describes: its certificate, and its key's
/// signature over the writer's public key and id.
///
/// # Errors
///
/// [`TlsError::Config`] if the node's key is not an ECDSA P-256 key, or signing fails.
pub fn endorse(tls: &TlsConfig, key: &WriterKey) -> Result<Endorsement, TlsError> {
    let leaf = tls
        .leaf()
        .ok_or_else(|| TlsError::Config("no node certificate".into()))?;
    let signing = rustls::crypto::ring::sign::any_ecdsa_type(tls.key())
        .map_err(|e| TlsError::Config(format!("the node key cannot endorse: {e}")))?;
    let signer = signing
        .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
        .ok_or_else(|| TlsError::Config("the node key is not ECDSA P-256".into()))?;
    let public: [u8; 32] = key.public().into();
    let signature = signer
        .sign(&Endorsement::signed_bytes(&public, key.id()))
        .map_err(|e| TlsError::Config(format!("signing the endorsement: {e}")))?;
    Ok(key.endorsement(leaf.to_vec(), signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::tls::DevCa;

    /// 2026-12-01, in ms: inside a fresh certificate's validity.
    const NOW_MS: u64 = 1_796_083_200_000;

    fn now_ms() -> u64 {
        #[allow(clippy::disallowed_methods, reason = "a certificate is valid from now")]
        let now = std::time::SystemTime::now();
        now.duration_since(std::time::UNIX_EPOCH)
            .map_or(NOW_MS, |d| d.as_millis() as u64)
    }

    #[test]
    fn an_endorsement_by_a_certified_node_verifies_and_nothing_else_does() {
        let ca = DevCa::generate("test-ca").expect("a CA");
        let node = ca.node_config("node-a").expect("a node");
        let certifier = CaCertifier::new(&node).expect("a certifier");
        let key = WriterKey::from_seed([9; 32]);
        let endorsement = endorse(&node, &key).expect("endorsed");
        let now = now_ms();
        let public = Endorsement::check(&endorsement.encode(), key.id(), &certifier, now)
            .expect("a valid endorsement");
        assert_eq!(<[u8; 32]>::from(public), <[u8; 32]>::from(key.public()));

        // Another writer's key under this endorsement: the signature covers the key.
        let other = WriterKey::from_seed([10; 32]);
        let mut swapped = endorsement.clone();
        swapped.public_key = other.public().into();
        assert!(Endorsement::check(&swapped.encode(), other.id(), &certifier, now).is_err());

        // A node of another CA.
        let stranger = DevCa::generate("other-ca")
            .and_then(|ca| ca.node_config("node-x"))
            .expect("a node");
        let foreign = endorse(&stranger, &key).expect("endorsed");
        assert!(Endorsement::check(&foreign.encode(), key.id(), &certifier, now).is_err());

        // The CA's own certificate is no node certificate, and a tampered signature fails.
        let mut tampered = endorsement.clone();
        if let Some(byte) = tampered.signature.last_mut() {
            *byte ^= 1;
        }
        assert!(Endorsement::check(&tampered.encode(), key.id(), &certifier, now).is_err());
        let mut as_ca = endorsement.clone();
        as_ca.certificate = node.cas()[0].to_vec();
        assert!(Endorsement::check(&as_ca.encode(), key.id(), &certifier, now).is_err());

        // Written before the certificate was valid: the judgement uses the version's time.
        assert!(Endorsement::check(&endorsement.encode(), key.id(), &certifier, 1_000).is_err());
    }
}
