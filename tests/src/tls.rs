//! Test certificates for servers started with TLS: a CA, and one
//! certificate used both as the server's and the client's, valid for every
//! loopback address the harness hands out (127.0.0.1..=254) and
//! `localhost`. Made with the `openssl` command line (Debian's `openssl`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// PEM files of a CA and a certificate with its key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// etcdctl's (and ferro-bench's) flags for these files.
    pub fn client_flags(&self) -> Vec<String> {
        vec![
            format!("--cacert={}", self.ca.display()),
            format!("--cert={}", self.cert.display()),
            format!("--key={}", self.key.display()),
        ]
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a fresh CA and a certificate signed by it into `dir`.
pub fn generate(dir: &Path) -> TlsFiles {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let mut san = String::from("subjectAltName=DNS:localhost");
    for i in 1..=254 {
        let _ = write!(san, ",IP:127.0.0.{i}");
    }
    std::fs::write(
        dir.join("ext.cnf"),
        format!("{san}\nextendedKeyUsage=serverAuth,clientAuth\n"),
    )
    .unwrap_or_else(|e| panic!("write ext.cnf: {e}"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=ferrokv test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    issue(dir, "/CN=ferrokv test", "server");
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// A client certificate with common name `cn`, signed by `files`' CA (its
/// key is beside `ca.pem`), with `files`' CA: an identity for
/// `--client-cert-auth` (the common name is the auth user).
pub fn client_cert(files: &TlsFiles, cn: &str) -> TlsFiles {
    let dir = files
        .ca
        .parent()
        .unwrap_or_else(|| panic!("{} has no directory", files.ca.display()));
    let stem: String = cn
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let name = format!("client-{stem}");
    issue(dir, &format!("/CN={cn}"), &name);
    TlsFiles {
        ca: files.ca.clone(),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    }
}

/// A key `<name>.key` and a certificate `<name>.pem` for `subject`, signed
/// by the CA in `dir` (`ca.pem`, `ca.key`) with the extensions of
/// `ext.cnf`.
fn issue(dir: &Path, subject: &str, name: &str) {
    let (key, csr, cert) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", &key, "-out", &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            &cert,
        ],
    );
}

/// Revokes `cert` (issued by `files`' CA) and writes the CA's CRL, listing
/// every certificate revoked so far, to `crl.pem` beside the CA: an X.509
/// v2 CRL (with a CRL number), as `openssl ca` makes it. Returns its path.
pub fn revoke(files: &TlsFiles, cert: &Path) -> PathBuf {
    let dir = files
        .ca
        .parent()
        .unwrap_or_else(|| panic!("{} has no directory", files.ca.display()));
    if !dir.join("ca.cnf").exists() {
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca=test_ca\n[test_ca]\ndatabase=index.txt\ncrlnumber=crlnumber\n\
             default_md=sha256\ndefault_crl_days=2\n",
        )
        .unwrap_or_else(|e| panic!("write ca.cnf: {e}"));
        std::fs::write(dir.join("index.txt"), "").unwrap_or_else(|e| panic!("index.txt: {e}"));
        std::fs::write(dir.join("crlnumber"), "01\n").unwrap_or_else(|e| panic!("crlnumber: {e}"));
    }
    let ca = ["-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.pem"];
    let cert = cert.display().to_string();
    let mut args = vec!["ca"];
    args.extend(ca);
    args.extend(["-revoke", cert.as_str()]);
    openssl(dir, &args);
    // Written beside and renamed over: a server reading it meanwhile sees
    // the old list or the new one, never half of one.
    let mut args = vec!["ca"];
    args.extend(ca);
    args.extend(["-gencrl", "-out", "crl.pem.new"]);
    openssl(dir, &args);
    std::fs::rename(dir.join("crl.pem.new"), dir.join("crl.pem"))
        .unwrap_or_else(|e| panic!("rename crl.pem: {e}"));
    dir.join("crl.pem")
}
