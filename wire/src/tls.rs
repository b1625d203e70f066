//! TLS as etcd's flags set it up, for the client port and (through
//! `ferrokv-raft`'s `PeerTls`) between members: rustls (ring), ALPN `h2`
//! for gRPC and `http/1.1` for curl's `/health`, `/metrics`.
//!
//! - `--cert-file`/`--key-file`: read again for every new handshake when
//!   either file changed on disk (its modification time, size or inode), so
//!   rotated files take effect for new connections without a restart, as
//!   etcd's `GetCertificate` does; a changed pair that does not load is
//!   logged and the last good pair kept ([`CertFiles`]).
//! - `--trusted-ca-file` + `--client-cert-auth`: client certificates must
//!   chain to the CA; `--client-crl-file` refuses the certificates its CRL
//!   lists, re-read when the file changes (etcd reads it per connection).
//! - `--cipher-suites`: Go's names ([`crypto_provider`]); TLS 1.3 suites
//!   are always on, as in Go, where they are not configurable.
//! - `--auto-tls`: a self-signed certificate made at start ([`self_cert`]).
//!
//! Loading errors are etcd's words: `open PATH: no such file or directory`,
//! `tls: failed to find any PEM data in certificate input` (and `in key
//! input`), `tls: private key does not match public key`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme, SupportedCipherSuite};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};

/// etcd's TLS flags of one kind (client port, or peers with `--peer-`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFlags {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// `--trusted-ca-file`: the CA client certificates must chain to.
    pub trusted_ca_file: Option<PathBuf>,
    /// `--client-cert-auth`: refuse clients without such a certificate.
    pub client_cert_auth: bool,
    /// `--client-crl-file` / `--peer-crl-file`: certificates it revokes are
    /// refused in the handshake.
    pub crl_file: Option<PathBuf>,
    /// `--cipher-suites` (shared by both kinds), Go's names, checked by
    /// [`crypto_provider`].
    pub cipher_suites: Vec<String>,
    /// `--peer-cert-allowed-cn`: the common name a client certificate must
    /// carry.
    pub allowed_cn: Option<String>,
    /// `--peer-cert-allowed-hostname` / `--client-cert-allowed-hostname`:
    /// a name or IP a client certificate must be valid for.
    pub allowed_hostname: Option<String>,
    /// The files are `--auto-tls`'s self-signed pair: as etcd, a dialer
    /// with such a pair does not verify the peer it dials.
    pub self_signed: bool,
}

/// What a name in `--cipher-suites` is to ferrokv.
#[derive(Clone, Copy, Debug)]
enum GoSuite {
    /// A TLS 1.2 suite rustls implements.
    Tls12(SupportedCipherSuite),
    /// A TLS 1.3 suite: always enabled, as Go ignores it in the list.
    Tls13,
    /// Known to Go, not implemented by rustls (CBC, RSA key exchange,
    /// 3DES, RC4): accepted as etcd accepts it, and never negotiated.
    Unimplemented,
}

/// Go's `tls.CipherSuites()` and `tls.InsecureCipherSuites()` names, and
/// the two short ChaCha20 aliases etcd's `tlsutil.GetCipherSuite` knows.
fn go_suite(name: &str) -> Option<GoSuite> {
    use rustls::crypto::ring::cipher_suite as rs;
    Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
            GoSuite::Tls12(rs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
        }
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
            GoSuite::Tls12(rs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
        }
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            GoSuite::Tls12(rs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => {
            GoSuite::Tls12(rs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)
        }
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => {
            GoSuite::Tls12(rs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384)
        }
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
            GoSuite::Tls12(rs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256)
        }
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => {
            GoSuite::Tls13
        }
        "TLS_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_GCM_SHA256"
        | "TLS_RSA_WITH_AES_256_GCM_SHA384"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_RSA_WITH_RC4_128_SHA"
        | "TLS_RSA_WITH_3DES_EDE_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA256"
        | "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_RSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256" => GoSuite::Unimplemented,
        _ => return None,
    })
}

/// The names of `--cipher-suites` that Go knows and rustls does not
/// implement (they are accepted, and never negotiated); an unknown name is
/// etcd's error, `unexpected TLS cipher suite "NAME"`.
pub fn unimplemented_cipher_suites(names: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for n in names {
        match go_suite(n) {
            None => return Err(format!("unexpected TLS cipher suite {n:?}")),
            Some(GoSuite::Unimplemented) => out.push(n.clone()),
            Some(_) => {}
        }
    }
    Ok(out)
}

/// rustls' ring provider limited to `--cipher-suites` for TLS 1.2, in the
/// order given (all of ring's when the list is empty). TLS 1.3 suites stay
/// enabled whatever the list says: Go's `tls.Config.CipherSuites` does not
/// apply to TLS 1.3, so an etcd given the same list negotiates TLS 1.3
/// with any client that offers it.
pub fn crypto_provider(cipher_suites: &[String]) -> Result<Arc<CryptoProvider>, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    if cipher_suites.is_empty() {
        return Ok(Arc::new(provider));
    }
    let mut suites: Vec<SupportedCipherSuite> = provider
        .cipher_suites
        .iter()
        .copied()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .collect();
    for n in cipher_suites {
        match go_suite(n) {
            None => return Err(format!("unexpected TLS cipher suite {n:?}")),
            Some(GoSuite::Tls12(s)) if !suites.contains(&s) => suites.push(s),
            Some(_) => {}
        }
    }
    provider.cipher_suites = suites;
    Ok(Arc::new(provider))
}

/// A whole file, with I/O errors as Go's `os` package words them (etcd
/// prints them so): `open PATH: no such file or directory`.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    let go = |op: &str, e: std::io::Error| {
        let text = e.to_string();
        let text = text.split(" (os error").next().unwrap_or(&text);
        let mut chars = text.chars();
        let text: String = chars
            .next()
            .map(|c| c.to_lowercase().chain(chars).collect())
            .unwrap_or_default();
        format!("{op} {}: {text}", path.display())
    };
    let mut f = std::fs::File::open(path).map_err(|e| go("open", e))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(|e| go("read", e))?;
    Ok(bytes)
}

/// The certificates of a PEM file (none is not an error here).
pub fn certs(pem_bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem_bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls: {e} in certificate input"))
}

/// A certificate chain and its key, in etcd's words when they do not load
/// (Go's `tls.X509KeyPair`).
pub fn certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = certs(&read(cert_file)?)?;
    if chain.is_empty() {
        return Err("tls: failed to find any PEM data in certificate input".to_string());
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key_file)?).map_err(|e| match e {
        pem::Error::NoItemsFound => "tls: failed to find any PEM data in key input".to_string(),
        e => format!("tls: {e} in key input"),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            "tls: private key does not match public key".to_string()
        }
        e => format!("tls: {e}"),
    })
}

/// The trusted CAs of `path` (`flag` names it in errors); a file with no
/// certificate is refused (etcd would start and refuse every client).
pub fn roots(path: &Path, flag: &str) -> Result<Arc<rustls::RootCertStore>, String> {
    let cas = certs(&read(path)?)?;
    if cas.is_empty() {
        return Err(format!(
            "{flag} {}: no PEM certificate in it",
            path.display()
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in cas {
        roots
            .add(c)
            .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    }
    Ok(Arc::new(roots))
}

/// What identifies one version of a file on disk: rotating a file, in place
/// or by renaming a new one over it, changes one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    ino: u64,
    dev: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        ino: m.ino(),
        dev: m.dev(),
    })
}

/// A key pair read from its files, and read again on the next handshake
/// after either file changes, as etcd reloads them: one `stat` of each
/// file per handshake, a read only after a change. Shared by every core
/// (handshakes only take the lock).
#[derive(Debug)]
pub struct CertFiles {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<CertState>,
}

#[derive(Debug)]
struct CertState {
    stamps: Option<(Stamp, Stamp)>,
    key: Arc<CertifiedKey>,
    /// The files' version that last failed to load: logged once.
    refused: Option<(Stamp, Stamp)>,
}

impl CertFiles {
    /// Reads the pair now: an error here refuses the start.
    pub fn load(
        cert_file: &Path,
        key_file: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<CertFiles>, String> {
        let stamps = stamp(cert_file).ok().zip(stamp(key_file).ok());
        let key = Arc::new(certified_key(cert_file, key_file, &provider)?);
        Ok(Arc::new(CertFiles {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            provider,
            state: Mutex::new(CertState {
                stamps,
                key,
                refused: None,
            }),
        }))
    }

    /// The pair for a new handshake: the files' current contents if they
    /// load, else the last pair that did.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = match stamp(&self.cert_file).and_then(|c| Ok((c, stamp(&self.key_file)?))) {
            Ok(now) => now,
            Err(e) => {
                // Between the two renames of a rotation, say: keep serving.
                if state.refused.is_none() {
                    log::warn!(
                        "failed to find cert files (cert-file {}, key-file {}): {e}; keeping the loaded certificate",
                        self.cert_file.display(),
                        self.key_file.display()
                    );
                }
                state.refused = state.stamps;
                return state.key.clone();
            }
        };
        if state.stamps != Some(now) && state.refused != Some(now) {
            match certified_key(&self.cert_file, &self.key_file, &self.provider) {
                Ok(key) => {
                    log::info!(
                        "loaded changed certificate {} (key {})",
                        self.cert_file.display(),
                        self.key_file.display()
                    );
                    state.key = Arc::new(key);
                    state.stamps = Some(now);
                    state.refused = None;
                }
                Err(e) => {
                    log::warn!(
                        "failed to create certificate (cert-file {}, key-file {}): {e}; keeping the last good one",
                        self.cert_file.display(),
                        self.key_file.display()
                    );
                    state.refused = Some(now);
                }
            }
        }
        state.key.clone()
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for CertFiles {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The CRLs of a PEM or DER file (Go's `x509.ParseCRL` takes both).
fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let bytes = read(path)?;
    let pem: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("crl {}: {e}", path.display()))?;
    if pem.is_empty() {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    Ok(pem)
}

/// Verifies client certificates against the trusted CAs, the CRL file
/// (read again when it changes) and the allowed common name or host name.
#[derive(Debug)]
struct ClientVerifier {
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<CryptoProvider>,
    crl_file: Option<PathBuf>,
    allowed_cn: Option<String>,
    allowed_hostname: Option<String>,
    hints: Vec<DistinguishedName>,
    current: Mutex<(Option<Stamp>, Arc<dyn ClientCertVerifier>)>,
}

fn webpki_verifier(
    roots: &Arc<rustls::RootCertStore>,
    provider: &Arc<CryptoProvider>,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    // A certificate of an issuer no CRL covers passes, as etcd only
    // looks for the serial numbers the file lists.
    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .with_crls(crls)
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| format!("tls: {e}"))
}

impl ClientVerifier {
    fn inner(&self) -> Arc<dyn ClientCertVerifier> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(crl) = &self.crl_file {
            let now = stamp(crl).ok();
            if now != cur.0 {
                match crls(crl).and_then(|c| webpki_verifier(&self.roots, &self.provider, c)) {
                    Ok(v) => {
                        log::info!("loaded changed CRL file {}", crl.display());
                        *cur = (now, v);
                    }
                    Err(e) => {
                        log::warn!(
                            "failed to read CRL file {}: {e}; keeping the last good one",
                            crl.display()
                        );
                        cur.0 = now;
                    }
                }
            }
        }
        cur.1.clone()
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner()
            .verify_client_cert(end_entity, intermediates, now)?;
        allowed(
            end_entity,
            self.allowed_cn.as_deref(),
            self.allowed_hostname.as_deref(),
        )?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `--peer-cert-allowed-cn` / `--peer-cert-allowed-hostname` (and the
/// client port's allowed hostname): a certificate of another common name,
/// or not valid for that host name, is refused.
fn allowed(
    end_entity: &CertificateDer<'_>,
    cn: Option<&str>,
    hostname: Option<&str>,
) -> Result<(), rustls::Error> {
    if let Some(cn) = cn {
        if crate::der::common_name(end_entity).as_deref() != Some(cn) {
            return Err(cert_auth_failed());
        }
    }
    if let Some(host) = hostname {
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let ok = ServerName::try_from(host)
            .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok());
        if !ok {
            return Err(cert_auth_failed());
        }
    }
    Ok(())
}

/// The verifier of a member this member dials: the trusted CA, and, as
/// etcd's `VerifyPeerCertificate` does on both ends of a peer link, the
/// allowed common name or host name when one is given.
pub fn server_verifier(
    flags: &TlsFlags,
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::client::danger::ServerCertVerifier>, String> {
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| format!("tls: {e}"))?;
    Ok(Arc::new(AllowedServer {
        inner,
        allowed_cn: flags.allowed_cn.clone(),
        allowed_hostname: flags.allowed_hostname.clone(),
    }))
}

#[derive(Debug)]
struct AllowedServer {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    allowed_cn: Option<String>,
    allowed_hostname: Option<String>,
}

impl rustls::client::danger::ServerCertVerifier for AllowedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        allowed(
            end_entity,
            self.allowed_cn.as_deref(),
            self.allowed_hostname.as_deref(),
        )?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// etcd's words when a certificate chains to the CA and fails
/// `--peer-cert-allowed-cn` / `--peer-cert-allowed-hostname`.
fn cert_auth_failed() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(std::io::Error::other(
            "client certificate authentication failed",
        )),
    )))
}

/// The verifier of client certificates for `flags`: chaining to `roots`,
/// not revoked by `flags.crl_file`, and of the allowed name if one is set
/// (etcd's error when both a CN and a host name are).
pub fn client_verifier(
    flags: &TlsFlags,
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    if let (Some(cn), Some(host)) = (&flags.allowed_cn, &flags.allowed_hostname) {
        return Err(format!(
            "AllowedCN and AllowedHostname are mutually exclusive (cn={cn:?}, hostname={host:?})"
        ));
    }
    let (stamp_now, crl_list) = match &flags.crl_file {
        Some(path) => (stamp(path).ok(), crls(path)?),
        None => (None, Vec::new()),
    };
    let inner = webpki_verifier(&roots, &provider, crl_list)?;
    Ok(Arc::new(ClientVerifier {
        hints: inner.root_hint_subjects().to_vec(),
        roots,
        provider,
        crl_file: flags.crl_file.clone(),
        allowed_cn: flags.allowed_cn.clone(),
        allowed_hostname: flags.allowed_hostname.clone(),
        current: Mutex::new((stamp_now, inner)),
    }))
}

/// The server side of every TLS connection this member accepts on the
/// client port; shared by all cores.
pub fn server_config(flags: &TlsFlags) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = crypto_provider(&flags.cipher_suites)?;
    let certs = CertFiles::load(&flags.cert_file, &flags.key_file, provider.clone())?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let builder = match (&flags.trusted_ca_file, flags.client_cert_auth) {
        (Some(ca), true) => {
            let roots = roots(ca, "--trusted-ca-file")?;
            builder.with_client_cert_verifier(client_verifier(flags, roots, provider)?)
        }
        (None, true) => {
            return Err("--client-cert-auth needs --trusted-ca-file".into());
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `--auto-tls` / `--peer-auto-tls`, as etcd's `transport.SelfCert`: the
/// pair `cert.pem`/`key.pem` in `dir` (etcd's `<data-dir>/fixtures/client`
/// or `fixtures/peer`), made if either is missing: self-signed,
/// organization `etcd`, valid for a year, for the hosts of `urls` (IPs as
/// IP names). The key is ECDSA P-256 (etcd's is P-521, which ring does
/// not sign with). Returns the two paths.
pub fn self_cert(dir: &Path, urls: &[String]) -> Result<(PathBuf, PathBuf), String> {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create cert directory {}: {e}", dir.display()))?;
    let hosts: Vec<String> = urls
        .iter()
        .filter_map(|u| {
            let rest = u.split_once("://").map_or(u.as_str(), |(_, r)| r);
            let host_port = rest.split('/').next().unwrap_or(rest);
            let host = match host_port.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
                _ => host_port,
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            (!host.is_empty()).then(|| host.to_string())
        })
        .collect();
    let mut params = rcgen::CertificateParams::new(hosts)
        .map_err(|e| format!("cannot generate x509 certificate: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "etcd");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    // A clock set past year 9998 would overflow the sum: refuse, do not panic.
    params.not_after = now.checked_add(time::Duration::days(365)).ok_or_else(|| {
        format!("cannot generate x509 certificate: clock at {now} is out of range")
    })?;
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyEncipherment,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let mut serial = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut serial)
        .map_err(|e| format!("cannot generate random number: {e:?}"))?;
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot generate ECDSA key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot generate x509 certificate: {e}"))?;
    std::fs::write(&cert_path, cert.pem())
        .map_err(|e| format!("cannot write cert file {}: {e}", cert_path.display()))?;
    log::info!("created cert file {}", cert_path.display());
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(|e| format!("cannot write key file {}: {e}", key_path.display()))?;
        f.write_all(key.serialize_pem().as_bytes())
            .map_err(|e| format!("cannot write key file {}: {e}", key_path.display()))?;
    }
    log::info!("created key file {}", key_path.display());
    Ok((cert_path, key_path))
}

/// A server certificate verifier that accepts any certificate but still
/// checks the handshake signatures: etcd's `InsecureSkipVerify`, for
/// etcdctl's `--insecure-skip-tls-verify` and a `--peer-auto-tls` dialer
/// (self-signed pairs nobody can verify).
#[derive(Debug)]
pub struct AcceptAnyCertificate(pub Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
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
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_suites_are_gos_names() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let e = crypto_provider(&names(&[
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_FOO",
        ]))
        .unwrap_err();
        assert_eq!(e, "unexpected TLS cipher suite \"TLS_FOO\"");
        let p = crypto_provider(&names(&[
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            "TLS_RSA_WITH_AES_128_CBC_SHA",
            "TLS_AES_128_GCM_SHA256",
        ]))
        .unwrap();
        let tls12: Vec<String> = p
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS12)
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(
            tls12,
            [
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
            ]
        );
        // TLS 1.3 stays as Go has it: all three, whatever the list says.
        let tls13 = p
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .count();
        assert_eq!(tls13, 3);
        assert_eq!(
            unimplemented_cipher_suites(&names(&[
                "TLS_RSA_WITH_AES_128_CBC_SHA",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
            ]))
            .unwrap(),
            ["TLS_RSA_WITH_AES_128_CBC_SHA"]
        );
        assert_eq!(crypto_provider(&[]).unwrap().cipher_suites.len(), 9);
    }

    fn write_pair(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
        // By rename, as operators (and cert-manager) rotate files.
        std::fs::write(dir.join("c.tmp"), cert.pem()).unwrap();
        std::fs::write(dir.join("k.tmp"), key.serialize_pem()).unwrap();
        std::fs::rename(dir.join("c.tmp"), &c).unwrap();
        std::fs::rename(dir.join("k.tmp"), &k).unwrap();
        (c, k)
    }

    fn cn_of(files: &CertFiles) -> String {
        crate::der::common_name(&files.current().cert[0]).unwrap()
    }

    #[test]
    fn cert_files_reload_when_changed_and_keep_the_last_good_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = write_pair(dir.path(), "first");
        let files = CertFiles::load(&c, &k, crypto_provider(&[]).unwrap()).unwrap();
        assert_eq!(cn_of(&files), "first");
        write_pair(dir.path(), "second");
        assert_eq!(cn_of(&files), "second");
        // A broken certificate, or a key of another pair, keeps "second".
        std::fs::write(&c, "junk\n").unwrap();
        assert_eq!(cn_of(&files), "second");
        let good = write_pair(dir.path(), "third");
        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = write_pair(other.path(), "other");
        std::fs::copy(&other_key, &good.1).unwrap();
        assert_eq!(cn_of(&files), "second");
        std::fs::remove_file(&c).unwrap();
        assert_eq!(cn_of(&files), "second");
        write_pair(dir.path(), "fourth");
        assert_eq!(cn_of(&files), "fourth");
        // Errors at start are etcd's.
        let missing = dir.path().join("nope.pem");
        let e = CertFiles::load(&missing, &k, crypto_provider(&[]).unwrap()).unwrap_err();
        assert_eq!(
            e,
            format!("open {}: no such file or directory", missing.display())
        );
    }

    #[test]
    fn self_cert_names_the_url_hosts_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = dir.path().join("fixtures/client");
        let urls = [
            "https://127.0.0.1:2379".to_string(),
            "https://localhost:1".to_string(),
        ];
        let (c, k) = self_cert(&fixtures, &urls).unwrap();
        let files = CertFiles::load(&c, &k, crypto_provider(&[]).unwrap()).unwrap();
        let cert = files.current().cert[0].clone();
        let ee = webpki::EndEntityCert::try_from(&cert).unwrap();
        for host in ["127.0.0.1", "localhost"] {
            let name = ServerName::try_from(host).unwrap();
            ee.verify_is_valid_for_subject_name(&name).unwrap();
        }
        let before = std::fs::read(&c).unwrap();
        self_cert(&fixtures, &urls).unwrap();
        assert_eq!(
            std::fs::read(&c).unwrap(),
            before,
            "an existing pair is reused"
        );
    }

    #[test]
    fn allowed_cn_and_hostname_as_etcd_checks_them() {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let mut leaf = rcgen::CertificateParams::new(vec!["member.example".to_string()]).unwrap();
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "member");
        leaf.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let roots = Arc::new(roots);
        let verify = |cn: Option<&str>, host: Option<&str>| {
            let flags = TlsFlags {
                allowed_cn: cn.map(str::to_string),
                allowed_hostname: host.map(str::to_string),
                ..TlsFlags::default()
            };
            client_verifier(&flags, roots.clone(), crypto_provider(&[]).unwrap()).map(|v| {
                v.verify_client_cert(leaf.der(), &[], UnixTime::now())
                    .is_ok()
            })
        };
        // The same checks on a member this one dials (etcd's
        // VerifyPeerCertificate holds on both ends).
        let dial = |cn: Option<&str>| {
            let flags = TlsFlags {
                allowed_cn: cn.map(str::to_string),
                ..TlsFlags::default()
            };
            let v = server_verifier(&flags, roots.clone(), crypto_provider(&[]).unwrap()).unwrap();
            let name = ServerName::try_from("member.example").unwrap();
            v.verify_server_cert(leaf.der(), &[], &name, &[], UnixTime::now())
                .is_ok()
        };
        assert!(dial(None));
        assert!(dial(Some("member")));
        assert!(!dial(Some("other")));
        assert_eq!(verify(None, None), Ok(true));
        assert_eq!(verify(Some("member"), None), Ok(true));
        assert_eq!(verify(Some("other"), None), Ok(false));
        assert_eq!(verify(None, Some("member.example")), Ok(true));
        assert_eq!(verify(None, Some("127.0.0.1")), Ok(false));
        assert_eq!(
            verify(Some("a"), Some("b")),
            Err(
                "AllowedCN and AllowedHostname are mutually exclusive (cn=\"a\", hostname=\"b\")"
                    .to_string()
            )
        );
    }
}
