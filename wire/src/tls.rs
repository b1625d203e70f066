//! TLS on the client port, as etcd's `--cert-file`, `--key-file`,
//! `--trusted-ca-file` and `--client-cert-auth` set it up: rustls (ring),
//! ALPN `h2` for gRPC and `http/1.1` for curl's `/health`, `/metrics`.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// etcd's client TLS flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFlags {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// `--trusted-ca-file`: the CA client certificates must chain to.
    pub trusted_ca_file: Option<PathBuf>,
    /// `--client-cert-auth`: refuse clients without such a certificate.
    pub client_cert_auth: bool,
}

fn certs(path: &PathBuf, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// The server side of every TLS connection this member accepts; shared
/// by all cores (it is immutable).
pub fn server_config(flags: &TlsFlags) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&flags.cert_file, "--cert-file")?;
    let key = PrivateKeyDer::from_pem_file(&flags.key_file)
        .map_err(|e| format!("--key-file {}: {e}", flags.key_file.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match (&flags.trusted_ca_file, flags.client_cert_auth) {
        (Some(ca), true) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca, "--trusted-ca-file")? {
                roots
                    .add(c)
                    .map_err(|e| format!("--trusted-ca-file {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--trusted-ca-file {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        (None, true) => {
            return Err("--client-cert-auth needs --trusted-ca-file".into());
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("--cert-file/--key-file: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
