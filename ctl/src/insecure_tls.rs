//! `--insecure-skip-tls-verify`: TLS whose server certificate is not
//! checked (etcdctl's "CAUTION: testing only" option). tonic has no switch
//! for it, so the connection is made here (TCP, then rustls with a verifier
//! that accepts any certificate but still checks the handshake signatures)
//! and handed to tonic as an already secure stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::codegen::http::Uri;

/// The TLS client configuration: no server verification, the client's
/// certificate when given (PEM files), HTTP/2 by ALPN.
pub fn config(cert_key: Option<(&[u8], &[u8])>) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ferrokv_wire::tls::AcceptAnyCertificate(
            provider,
        )));
    let mut config = match cert_key {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("--cert: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("--key: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("--cert/--key: {e}"))?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

type Connecting = Pin<
    Box<
        dyn Future<
                Output = Result<
                    hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
                    std::io::Error,
                >,
            > + Send,
    >,
>;

/// A tonic connector making TLS connections with `config` to the URI's
/// host and port (the URI's scheme is http: tonic must not add its own TLS).
pub fn connector(
    config: Arc<rustls::ClientConfig>,
) -> impl tower::Service<
    Uri,
    Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = std::io::Error,
    Future = Connecting,
> + Clone
       + Send
       + 'static {
    let tls = tokio_rustls::TlsConnector::from(config);
    tower::service_fn(move |uri: Uri| -> Connecting {
        let tls = tls.clone();
        Box::pin(async move {
            let bad =
                |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
            let host = uri
                .host()
                .ok_or_else(|| bad("endpoint without a host"))?
                .to_string();
            let port = uri.port_u16().unwrap_or(2379);
            let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                .map_err(|_| bad("endpoint host is not a valid server name"))?;
            let stream = tls.connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    })
}
