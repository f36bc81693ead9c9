//! TLS for `rediss://`: the CA bundle or the system's roots, an optional
//! client certificate, a verifier pinned to `redis.tls_server_name` for
//! servers dialled by IP, and the loud opt-out.

use std::path::PathBuf;
use std::sync::Arc;

use fred::rustls;

use super::RedisError;
use crate::config::RedisConfig;

/// The rustls configuration for `rediss://`: the given CA bundle (or the
/// system's roots), an optional client certificate, and verification on
/// unless explicitly turned off.
pub(super) fn tls_config(cfg: &RedisConfig) -> Result<fred::types::config::TlsConfig, RedisError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{ClientConfig, RootCertStore};

    let read_certs = |path: &PathBuf| -> Result<Vec<CertificateDer<'static>>, RedisError> {
        CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                RedisError::Setup(format!(
                    "cannot read certificates from {}: {e}",
                    path.display()
                ))
            })
    };
    let builder = if cfg.tls_insecure_skip_verify {
        tracing::warn!(
            "redis.tls_insecure_skip_verify is on: the Redis server's certificate is NOT verified; anyone on the path can impersonate it"
        );
        ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new()))
    } else {
        let mut roots = RootCertStore::empty();
        match &cfg.tls_ca_file {
            Some(ca) => {
                for cert in read_certs(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| RedisError::Setup(format!("{}: {e}", ca.display())))?;
                }
            }
            None => {
                for cert in rustls_native_roots() {
                    let _ = roots.add(cert);
                }
            }
        }
        match &cfg.tls_server_name {
            // Every server's certificate must name this, including servers
            // the client discovers by IP (Cluster nodes from CLUSTER SLOTS,
            // the primary a sentinel names), which fred dials by address.
            Some(name) => {
                let name = rustls::pki_types::ServerName::try_from(name.clone()).map_err(|e| {
                    RedisError::Setup(format!("redis.tls_server_name {name:?}: {e}"))
                })?;
                let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::new(rustls::crypto::ring::default_provider()),
                )
                .build()
                .map_err(|e| RedisError::Setup(format!("TLS roots: {e}")))?;
                ClientConfig::builder()
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ExpectServerName { inner, name }))
            }
            None => ClientConfig::builder().with_root_certificates(roots),
        }
    };
    let config = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                RedisError::Setup(format!(
                    "cannot read the private key {}: {e}",
                    key.display()
                ))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| RedisError::Setup(format!("client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(fred::types::config::TlsConnector::from(config).into())
}

/// The system's trusted roots, through fred's own default connector's
/// source (rustls-native-certs).
fn rustls_native_roots() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls_native_certs::load_native_certs().certs
}

/// Full WebPKI verification, against `redis.tls_server_name` whatever
/// address was dialled.
#[derive(Debug)]
struct ExpectServerName {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: rustls::pki_types::ServerName<'static>,
}

impl rustls::client::danger::ServerCertVerifier for ExpectServerName {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _dialled: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts every server certificate (`redis.tls_insecure_skip_verify`).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl AcceptAnyCertificate {
    fn new() -> AcceptAnyCertificate {
        AcceptAnyCertificate(Arc::new(rustls::crypto::ring::default_provider()))
    }
}

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test CA and the `redis.test` server certificate, in DER.
    fn ca_and_certificate() -> (
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::CertificateDer<'static>,
    ) {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let dir = tempfile::tempdir().expect("tempdir");
        dsg_testkit::local_redis::make_test_certificates(dir.path()).expect("certificates");
        let read = |f: &str| CertificateDer::from_pem_file(dir.path().join(f)).expect("pem");
        (read("ca.pem"), read("server.pem"))
    }

    #[test]
    fn tls_server_name_is_checked_whatever_address_was_dialled() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        let (ca, cert) = ca_and_certificate();
        let verifier = |name: &str| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.clone()).expect("root");
            ExpectServerName {
                inner: rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::new(rustls::crypto::ring::default_provider()),
                )
                .build()
                .expect("verifier"),
                name: ServerName::try_from(name.to_string()).expect("name"),
            }
        };
        // Dialled by IP (a Cluster node, the primary a sentinel names).
        let dialled = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let check = |name: &str| {
            verifier(name).verify_server_cert(&cert, &[], &dialled, &[], UnixTime::now())
        };
        assert!(check("redis.test").is_ok());
        assert!(check("other.test").is_err());
    }
}
