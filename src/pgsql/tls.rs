//! TLS to PostgreSQL as libpq negotiates it from `sslmode`: rustls with ring (the provider the
//! rest of the worker uses), the server's chain verified against `sslrootcert` (or the system's
//! trust store for `sslrootcert=system`) for `verify-ca` and `verify-full`, its name too for
//! `verify-full`, nothing verified for `prefer` and `require` without a root file (libpq does
//! not either), and the client certificate of `sslcert`/`sslkey`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::PgsqlError;
use crate::config::{PgsqlTls, SslMode};

/// The driver's `sslmode`: libpq's `allow` is taken as `prefer` (TLS when offered), the
/// verifying modes as `require` (the verification is the rustls configuration's).
pub(super) fn driver_mode(mode: SslMode) -> tokio_postgres::config::SslMode {
    match mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    }
}

/// The rustls configuration for `tls`; the files are read here, so that a wrong path is named
/// with its setting rather than failing inside the handshake.
pub(super) fn client_config(tls: &PgsqlTls) -> Result<ClientConfig, PgsqlError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let chain = if tls.verifies_chain() {
        let roots = Arc::new(roots(tls)?);
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
            .build()
            .map_err(|e| file_error(tls, tls.root_cert.as_deref(), e.to_string()))?;
        Some(verifier)
    } else {
        None
    };
    let verifier = Arc::new(Verifier {
        chain,
        check_name: tls.mode == SslMode::VerifyFull,
        algorithms,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| file_error(tls, None, e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), key) => {
            let key_path = key.as_deref().unwrap_or(cert);
            let certs = read_certs(tls, cert)?;
            let pem = read(tls, key_path)?;
            let key = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| file_error(tls, Some(key_path), format!("no private key: {e}")))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| file_error(tls, Some(cert), e.to_string()))
        }
        (None, _) => Ok(builder.with_no_client_auth()),
    }
}

/// The root certificates: `sslrootcert`'s, or the system's.
fn roots(tls: &PgsqlTls) -> Result<RootCertStore, PgsqlError> {
    let mut roots = RootCertStore::empty();
    match &tls.root_cert {
        Some(path) => {
            for cert in read_certs(tls, path)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error(tls, Some(path), e.to_string()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(roots)
}

fn read(tls: &PgsqlTls, path: &Path) -> Result<Vec<u8>, PgsqlError> {
    crate::config::read_pem(path).map_err(|e| file_error(tls, Some(path), e.to_string()))
}

fn read_certs(tls: &PgsqlTls, path: &Path) -> Result<Vec<CertificateDer<'static>>, PgsqlError> {
    let pem = read(tls, path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(tls, Some(path), e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(
            tls,
            Some(path),
            "no PEM certificate in it".into(),
        ));
    }
    Ok(certs)
}

fn file_error(tls: &PgsqlTls, path: Option<&Path>, cause: String) -> PgsqlError {
    PgsqlError::TlsFile {
        path: path.map_or_else(|| "(none)".into(), |p| p.display().to_string()),
        setting: tls.setting.clone(),
        cause,
    }
}

/// libpq's verification per `sslmode`: none, the chain, or the chain and the name.
#[derive(Debug)]
struct Verifier {
    /// The chain's verifier; `None`: nothing is verified (`prefer`, `require`).
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// `verify-full`: the certificate must name the host.
    check_name: bool,
    /// The handshake's signatures are always checked.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
