//! TLS for `rediss://`: the CA bundle or the system's roots, an optional
//! client certificate, a verifier pinned to `redis.tls_server_name` for
//! servers dialled by IP, and the loud opt-out.

use std::path::PathBuf;
use std::sync::Arc;

use super::RedisError;
use super::connection::config_error;
use crate::config::RedisConfig;

/// The rustls configuration for `rediss://`: the given CA bundle (or the
/// system's roots), an optional client certificate, and verification on
/// unless explicitly turned off.
pub(super) fn tls_config(cfg: &RedisConfig) -> Result<fred::types::config::TlsConfig, RedisError> {
    use fred::rustls::pki_types::pem::PemObject;
    use fred::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use fred::rustls::{ClientConfig, RootCertStore};

    let read_certs = |path: &PathBuf| -> Result<Vec<CertificateDer<'static>>, RedisError> {
        CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                config_error(format!(
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
                        .map_err(|e| config_error(format!("{}: {e}", ca.display())))?;
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
                let name = fred::rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| config_error(format!("redis.tls_server_name {name:?}: {e}")))?;
                let inner = fred::rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::new(fred::rustls::crypto::ring::default_provider()),
                )
                .build()
                .map_err(|e| config_error(format!("TLS roots: {e}")))?;
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
                config_error(format!(
                    "cannot read the private key {}: {e}",
                    key.display()
                ))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| config_error(format!("client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(fred::types::config::TlsConnector::from(config).into())
}

/// The system's trusted roots, through fred's own default connector's
/// source (rustls-native-certs).
fn rustls_native_roots() -> Vec<fred::rustls::pki_types::CertificateDer<'static>> {
    rustls_native_certs::load_native_certs().certs
}

/// Full WebPKI verification, against `redis.tls_server_name` whatever
/// address was dialled.
#[derive(Debug)]
struct ExpectServerName {
    inner: Arc<fred::rustls::client::WebPkiServerVerifier>,
    name: fred::rustls::pki_types::ServerName<'static>,
}

impl fred::rustls::client::danger::ServerCertVerifier for ExpectServerName {
    fn verify_server_cert(
        &self,
        end_entity: &fred::rustls::pki_types::CertificateDer<'_>,
        intermediates: &[fred::rustls::pki_types::CertificateDer<'_>],
        _dialled: &fred::rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: fred::rustls::pki_types::UnixTime,
    ) -> Result<fred::rustls::client::danger::ServerCertVerified, fred::rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &fred::rustls::pki_types::CertificateDer<'_>,
        dss: &fred::rustls::DigitallySignedStruct,
    ) -> Result<fred::rustls::client::danger::HandshakeSignatureValid, fred::rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &fred::rustls::pki_types::CertificateDer<'_>,
        dss: &fred::rustls::DigitallySignedStruct,
    ) -> Result<fred::rustls::client::danger::HandshakeSignatureValid, fred::rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<fred::rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts every server certificate (`redis.tls_insecure_skip_verify`).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<fred::rustls::crypto::CryptoProvider>);

impl AcceptAnyCertificate {
    fn new() -> AcceptAnyCertificate {
        AcceptAnyCertificate(Arc::new(fred::rustls::crypto::ring::default_provider()))
    }
}

impl fred::rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &fred::rustls::pki_types::CertificateDer<'_>,
        _: &[fred::rustls::pki_types::CertificateDer<'_>],
        _: &fred::rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: fred::rustls::pki_types::UnixTime,
    ) -> Result<fred::rustls::client::danger::ServerCertVerified, fred::rustls::Error> {
        Ok(fred::rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &fred::rustls::pki_types::CertificateDer<'_>,
        dss: &fred::rustls::DigitallySignedStruct,
    ) -> Result<fred::rustls::client::danger::HandshakeSignatureValid, fred::rustls::Error> {
        fred::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &fred::rustls::pki_types::CertificateDer<'_>,
        dss: &fred::rustls::DigitallySignedStruct,
    ) -> Result<fred::rustls::client::danger::HandshakeSignatureValid, fred::rustls::Error> {
        fred::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<fred::rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test CA and the `redis.test` server certificate, in DER.
    fn ca_and_certificate() -> (
        fred::rustls::pki_types::CertificateDer<'static>,
        fred::rustls::pki_types::CertificateDer<'static>,
    ) {
        use fred::rustls::pki_types::CertificateDer;
        use fred::rustls::pki_types::pem::PemObject;
        let dir = tempfile::tempdir().expect("tempdir");
        dsg_testkit::local_redis::make_test_certificates(dir.path()).expect("certificates");
        let read = |f: &str| CertificateDer::from_pem_file(dir.path().join(f)).expect("pem");
        (read("ca.pem"), read("server.pem"))
    }

    #[test]
    fn tls_server_name_is_checked_whatever_address_was_dialled() {
        use fred::rustls::client::danger::ServerCertVerifier;
        use fred::rustls::pki_types::{ServerName, UnixTime};
        let (ca, cert) = ca_and_certificate();
        let verifier = |name: &str| {
            let mut roots = fred::rustls::RootCertStore::empty();
            roots.add(ca.clone()).expect("root");
            ExpectServerName {
                inner: fred::rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::new(fred::rustls::crypto::ring::default_provider()),
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
