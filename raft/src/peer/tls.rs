//! Peer TLS, as etcd's `--peer-cert-file`, `--peer-key-file`,
//! `--peer-trusted-ca-file` and `--peer-client-cert-auth` set it up:
//! rustls (ring) around the glommio `TcpStream`, where the transport dials
//! an `https` peer URL (a client connection that verifies the peer's
//! certificate for the URL's host against the trusted CA, and presents this
//! member's certificate) and where it accepts on an `https` listener (a
//! server connection that, as etcd's does, requires a client certificate
//! chaining to the trusted CA whenever one is given).
//!
//! Loading errors are etcd's words: `open PATH: no such file or directory`,
//! `tls: failed to find any PEM data in certificate input` (and `in key
//! input`), `tls: private key does not match public key`.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ferrokv_wire::tls::{self as wtls, TlsFlags};
use futures_lite::io::{AsyncRead, AsyncWrite};
use rustls_pki_types::ServerName;

/// The TLS side of this member's peer links: shared by every connection
/// (`Send + Sync`; the key pair is read again after the files change, see
/// [`wtls::CertFiles`]).
#[derive(Clone, Debug)]
pub struct PeerTls {
    server: Arc<rustls::ServerConfig>,
    /// `None` without a trusted CA: such a member can serve TLS but cannot
    /// verify a member it dials, so it may not dial `https` peers.
    client: Option<Arc<rustls::ClientConfig>>,
}

impl PeerTls {
    /// Loads etcd's peer TLS files (the common case of [`PeerTls::from_flags`]).
    pub fn load(
        cert_file: &Path,
        key_file: &Path,
        trusted_ca_file: Option<&Path>,
        client_cert_auth: bool,
    ) -> Result<PeerTls, String> {
        PeerTls::from_flags(&TlsFlags {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            trusted_ca_file: trusted_ca_file.map(Path::to_path_buf),
            client_cert_auth,
            ..TlsFlags::default()
        })
    }

    /// etcd's peer TLS. As in etcd, a trusted CA makes the acceptor require
    /// client certificates signed by it, with or without
    /// `client_cert_auth`, not revoked by `--peer-crl-file` and of
    /// `--peer-cert-allowed-cn`/`-hostname` when given;
    /// `client_cert_auth` without a CA is refused (etcd would verify
    /// against the system's CAs, which no member certificate of a private
    /// CA passes). The allowed common name or host name holds for the
    /// members this one dials too, as in etcd. `--cipher-suites` limits both sides. A `--peer-auto-tls`
    /// pair (`self_signed`) dials without verifying the peer, as etcd's
    /// `selfCert` does.
    pub fn from_flags(flags: &TlsFlags) -> Result<PeerTls, String> {
        let provider = wtls::crypto_provider(&flags.cipher_suites)?;
        let certs = wtls::CertFiles::load(&flags.cert_file, &flags.key_file, provider.clone())?;
        let roots = flags
            .trusted_ca_file
            .as_deref()
            .map(|ca| wtls::roots(ca, "--peer-trusted-ca-file"))
            .transpose()?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?;
        let server = match &roots {
            Some(roots) => server.with_client_cert_verifier(wtls::client_verifier(
                flags,
                roots.clone(),
                provider.clone(),
            )?),
            None if flags.client_cert_auth => {
                return Err("--peer-client-cert-auth needs --peer-trusted-ca-file".to_string())
            }
            None => server.with_no_client_auth(),
        };
        let server = server.with_cert_resolver(certs.clone());
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?;
        let client =
            match roots {
                Some(roots) if flags.allowed_cn.is_some() || flags.allowed_hostname.is_some() => {
                    Some(client.dangerous().with_custom_certificate_verifier(
                        wtls::server_verifier(flags, roots, provider)?,
                    ))
                }
                Some(roots) => Some(client.with_root_certificates(roots)),
                None if flags.self_signed => Some(
                    client
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(wtls::AcceptAnyCertificate(
                            provider,
                        ))),
                ),
                None => None,
            }
            .map(|c| Arc::new(c.with_client_cert_resolver(certs)));
        Ok(PeerTls {
            server: Arc::new(server),
            client,
        })
    }

    /// TLS from configurations built elsewhere (tests: a dialer without a
    /// client certificate). `client: None` accepts only.
    pub fn from_configs(
        server: Arc<rustls::ServerConfig>,
        client: Option<Arc<rustls::ClientConfig>>,
    ) -> PeerTls {
        PeerTls { server, client }
    }

    /// Whether this member can dial `https` peers (it has a trusted CA to
    /// verify them with).
    pub fn can_dial(&self) -> bool {
        self.client.is_some()
    }

    /// The dialer's configuration (`None` without a trusted CA).
    pub(crate) fn client(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.client.as_ref()
    }

    /// The client side of a TLS link on a fresh connection.
    pub(crate) async fn connect(
        &self,
        name: ServerName<'static>,
        tcp: glommio::net::TcpStream,
    ) -> Result<Stream, String> {
        let Some(client) = &self.client else {
            return Err("no --peer-trusted-ca-file to verify the peer with".to_string());
        };
        futures_rustls::TlsConnector::from(client.clone())
            .connect(name, tcp)
            .await
            .map(|s| Stream::TlsClient(Box::new(s)))
            .map_err(handshake_error)
    }

    /// The server side of a TLS link on an accepted connection.
    pub(crate) async fn accept(&self, tcp: glommio::net::TcpStream) -> Result<Stream, String> {
        futures_rustls::TlsAcceptor::from(self.server.clone())
            .accept(tcp)
            .await
            .map(|s| Stream::TlsServer(Box::new(s)))
            .map_err(|e| {
                let plain = e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<rustls::Error>())
                    .is_some_and(|r| {
                        matches!(
                            r,
                            rustls::Error::InvalidMessage(
                                rustls::InvalidMessage::InvalidContentType
                            )
                        )
                    });
                let e = handshake_error(e);
                if plain {
                    format!(
                        "{e} (the peer does not speak TLS: is this member's peer URL https in its --initial-cluster?)"
                    )
                } else {
                    e
                }
            })
    }
}

fn handshake_error(e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        // rustls' "tls handshake eof": the peer gave up, e.g. on our
        // certificate, or it does not speak TLS.
        "TLS handshake failed: the peer closed the connection during the handshake".to_string()
    } else {
        format!("TLS handshake failed: {e}")
    }
}

/// The name a dialed peer's certificate must carry: the host of its peer
/// URL (an IP is checked against the certificate's IP SANs).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))
}

/// A peer connection, plain or TLS: one type for the connection code.
pub(crate) enum Stream {
    Tcp(glommio::net::TcpStream),
    TlsClient(Box<futures_rustls::client::TlsStream<glommio::net::TcpStream>>),
    TlsServer(Box<futures_rustls::server::TlsStream<glommio::net::TcpStream>>),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $e,
            Stream::TlsClient($s) => $e,
            Stream::TlsServer($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self, s => Pin::new(s).poll_close(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_errors_are_etcds_words() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = PeerTls::load(&missing, &missing, None, false).unwrap_err();
        assert_eq!(
            e,
            format!("open {}: no such file or directory", missing.display())
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = PeerTls::load(&junk, &junk, None, false).unwrap_err();
        assert_eq!(e, "tls: failed to find any PEM data in certificate input");
        // A directory opens and fails to read, as in Go.
        let e = PeerTls::load(dir.path(), &junk, None, false).unwrap_err();
        assert_eq!(e, format!("read {}: is a directory", dir.path().display()));
    }
}
