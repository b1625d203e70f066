//! etcd's `--auth-token jwt,pub-key=...,priv-key=...,sign-method=...,ttl=...`
//! tokens: JSON Web Tokens whose claims are etcd's (`username`, `revision`,
//! `exp`), signed by the member that authenticated the user and verifiable
//! by any member holding the public key, with no state shared between
//! members (etcd's `auth/jwt.go`). A member given only `pub-key` verifies
//! and cannot authenticate, as etcd.
//!
//! The token's `revision` is the auth revision it was made at: every check
//! with it compares that revision (a token older than an auth change gets
//! `revision of auth store is old`, and clients authenticate again).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ferrokv_wire::der;
use p521::ecdsa::signature::{Signer as _, Verifier as _};
use p521::pkcs8::DecodePrivateKey;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};

/// etcd's default `ttl` of JWT tokens.
const TTL_DEFAULT: Duration = Duration::from_secs(5 * 60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
}

impl Method {
    fn parse(s: &str) -> Result<Method, String> {
        Ok(match s {
            "RS256" => Method::Rs256,
            "RS384" => Method::Rs384,
            "RS512" => Method::Rs512,
            "PS256" => Method::Ps256,
            "PS384" => Method::Ps384,
            "PS512" => Method::Ps512,
            "ES256" => Method::Es256,
            "ES384" => Method::Es384,
            "ES512" => Method::Es512,
            other => {
                return Err(format!(
                    "auth: invalid auth options: sign-method {other:?} is not supported \
                     (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512)"
                ))
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Method::Rs256 => "RS256",
            Method::Rs384 => "RS384",
            Method::Rs512 => "RS512",
            Method::Ps256 => "PS256",
            Method::Ps384 => "PS384",
            Method::Ps512 => "PS512",
            Method::Es256 => "ES256",
            Method::Es384 => "ES384",
            Method::Es512 => "ES512",
        }
    }

    /// How ring verifies this method; None for ES512 (P-521, which ring
    /// lacks: RustCrypto's `p521` does it).
    fn verification(self) -> Option<&'static dyn signature::VerificationAlgorithm> {
        Some(match self {
            Method::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Method::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Method::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Method::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Method::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            Method::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
            Method::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            Method::Es384 => &signature::ECDSA_P384_SHA384_FIXED,
            Method::Es512 => return None,
        })
    }

    fn rsa_padding(self) -> Option<&'static dyn signature::RsaEncoding> {
        match self {
            Method::Rs256 => Some(&signature::RSA_PKCS1_SHA256),
            Method::Rs384 => Some(&signature::RSA_PKCS1_SHA384),
            Method::Rs512 => Some(&signature::RSA_PKCS1_SHA512),
            Method::Ps256 => Some(&signature::RSA_PSS_SHA256),
            Method::Ps384 => Some(&signature::RSA_PSS_SHA384),
            Method::Ps512 => Some(&signature::RSA_PSS_SHA512),
            Method::Es256 | Method::Es384 | Method::Es512 => None,
        }
    }

    fn ecdsa_signing(self) -> Option<&'static signature::EcdsaSigningAlgorithm> {
        match self {
            Method::Es256 => Some(&signature::ECDSA_P256_SHA256_FIXED_SIGNING),
            Method::Es384 => Some(&signature::ECDSA_P384_SHA384_FIXED_SIGNING),
            _ => None,
        }
    }
}

enum Signer {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
    /// ES512: ECDSA on P-521 with SHA-512 (nonces from the OS, as Go's).
    P521(p521::ecdsa::SigningKey),
}

/// The public key a token is verified with.
enum Public {
    /// As ring verifies it (RSA: PKCS#1 RSAPublicKey; EC: the
    /// uncompressed point).
    Ring(Vec<u8>),
    P521(p521::ecdsa::VerifyingKey),
}

pub struct Jwt {
    method: Method,
    public: Public,
    signer: Option<Signer>,
    ttl: Duration,
    rng: SystemRandom,
}

/// A SEC1 `EC PRIVATE KEY`: its private scalar and, if present, its
/// public point.
fn sec1_parts(key: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (der::SEQUENCE, body, _) = der::element(key)? else {
        return None;
    };
    let mut fields = der::elements(body);
    let _version = fields.next()?;
    let (der::OCTET_STRING, private) = fields.next()? else {
        return None;
    };
    // [1] EXPLICIT BIT STRING publicKey, when present.
    let public =
        fields
            .find(|(tag, _)| *tag == 0xa1)
            .and_then(|(_, inner)| match der::element(inner) {
                Some((der::BIT_STRING, bits, _)) => bits.strip_prefix(&[0]),
                _ => None,
            });
    Some((private, public))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("auth: cannot read {}: {e}", path.display()))
}

impl Jwt {
    /// `--auth-token`: `simple` (None) or `jwt,...`.
    pub fn from_flag(flag: &str) -> Result<Option<Jwt>, String> {
        let mut parts = flag.split(',');
        match parts.next() {
            Some("simple") if parts.next().is_none() => return Ok(None),
            Some("jwt") => {}
            _ => {
                return Err(format!(
                    "auth: invalid auth options: unknown token type {flag:?} (simple or jwt,...)"
                ))
            }
        }
        let (mut public, mut private, mut method, mut ttl) = (None, None, None, TTL_DEFAULT);
        for opt in parts {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| format!("auth: invalid auth options: {opt:?} is not key=value"))?;
            match k {
                "pub-key" => public = Some(v.to_string()),
                "priv-key" => private = Some(v.to_string()),
                "sign-method" => method = Some(Method::parse(v)?),
                "ttl" => {
                    ttl = crate::maintenance::parse_go_duration(v).ok_or_else(|| {
                        format!("auth: invalid auth options: ttl {v:?} is not a duration")
                    })?
                }
                other => {
                    return Err(format!(
                        "auth: invalid auth options: unknown option {other:?}"
                    ))
                }
            }
        }
        let method = method.ok_or("auth: invalid auth options: jwt needs sign-method=")?;
        let public = public.ok_or("auth: invalid auth options: jwt needs pub-key=")?;
        Jwt::load(
            method,
            Path::new(&public),
            private.as_deref().map(Path::new),
            ttl,
        )
        .map(Some)
    }

    fn load(
        method: Method,
        public: &Path,
        private: Option<&Path>,
        ttl: Duration,
    ) -> Result<Jwt, String> {
        let bad = |what: &str, path: &Path| {
            format!(
                "auth: {} is not a {what} key for {}",
                path.display(),
                method.name()
            )
        };
        let pem = read(public)?;
        let public_key = match SubjectPublicKeyInfoDer::from_pem_slice(&pem) {
            Ok(spki) => der::spki_key(spki.as_ref())
                .ok_or_else(|| bad("public", public))?
                .to_vec(),
            Err(_) => return Err(bad("public (PEM, BEGIN PUBLIC KEY)", public)),
        };
        let rng = SystemRandom::new();
        let signer = match private {
            None => None,
            Some(path) => {
                let key = PrivateKeyDer::from_pem_slice(&read(path)?)
                    .map_err(|_| bad("private (PEM)", path))?;
                Some(match (method.ecdsa_signing(), &key) {
                    _ if method == Method::Es512 => {
                        let secret = match &key {
                            PrivateKeyDer::Pkcs8(k) => {
                                p521::SecretKey::from_pkcs8_der(k.secret_pkcs8_der()).ok()
                            }
                            PrivateKeyDer::Sec1(k) => {
                                p521::SecretKey::from_sec1_der(k.secret_sec1_der()).ok()
                            }
                            _ => None,
                        }
                        .ok_or_else(|| bad("EC private", path))?;
                        Signer::P521(
                            p521::ecdsa::SigningKey::from_bytes(&secret.to_bytes())
                                .map_err(|_| bad("EC private", path))?,
                        )
                    }
                    (None, PrivateKeyDer::Pkcs8(k)) => Signer::Rsa(
                        RsaKeyPair::from_pkcs8(k.secret_pkcs8_der())
                            .map_err(|_| bad("RSA private", path))?,
                    ),
                    (None, PrivateKeyDer::Pkcs1(k)) => Signer::Rsa(
                        RsaKeyPair::from_der(k.secret_pkcs1_der())
                            .map_err(|_| bad("RSA private", path))?,
                    ),
                    (Some(alg), PrivateKeyDer::Pkcs8(k)) => Signer::Ecdsa(
                        EcdsaKeyPair::from_pkcs8(alg, k.secret_pkcs8_der(), &rng)
                            .map_err(|_| bad("EC private", path))?,
                    ),
                    (Some(alg), PrivateKeyDer::Sec1(k)) => {
                        let (scalar, point) = sec1_parts(k.secret_sec1_der())
                            .ok_or_else(|| bad("EC private", path))?;
                        let point = point.unwrap_or(&public_key);
                        Signer::Ecdsa(
                            EcdsaKeyPair::from_private_key_and_public_key(alg, scalar, point, &rng)
                                .map_err(|_| bad("EC private", path))?,
                        )
                    }
                    _ => return Err(bad("private", path)),
                })
            }
        };
        let jwt = Jwt {
            method,
            public: if method == Method::Es512 {
                Public::P521(
                    p521::ecdsa::VerifyingKey::from_sec1_bytes(&public_key)
                        .map_err(|_| bad("public", public))?,
                )
            } else {
                Public::Ring(public_key)
            },
            signer,
            ttl,
            rng,
        };
        // The pair must match: a token this member makes, it must accept.
        if jwt.signer.is_some() {
            let probe = jwt.sign("probe", 1)?;
            if jwt.verify(&probe).is_none() {
                return Err(format!(
                    "auth: the keys {} and {} are not a pair",
                    public.display(),
                    private.map_or_else(String::new, |p| p.display().to_string())
                ));
            }
        }
        Ok(jwt)
    }

    /// A token for `user` made at auth revision `revision`, valid for the
    /// TTL. Err on a member that has no private key.
    pub fn sign(&self, user: &str, revision: u64) -> Result<String, String> {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_add(self.ttl.as_secs());
        // Go's json.Marshal of jwt-go's maps: keys sorted.
        let header = format!(r#"{{"alg":"{}","typ":"JWT"}}"#, self.method.name());
        let claims = serde_json::json!({"exp": exp, "revision": revision, "username": user});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = match &self.signer {
            None => return Err("auth: this member has no priv-key to sign tokens with".into()),
            Some(Signer::Rsa(k)) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                let padding = self
                    .method
                    .rsa_padding()
                    .ok_or("auth: key and method differ")?;
                k.sign(padding, &self.rng, input.as_bytes(), &mut sig)
                    .map_err(|_| "auth: signing failed".to_string())?;
                sig
            }
            Some(Signer::Ecdsa(k)) => k
                .sign(&self.rng, input.as_bytes())
                .map_err(|_| "auth: signing failed".to_string())?
                .as_ref()
                .to_vec(),
            Some(Signer::P521(k)) => {
                let sig: p521::ecdsa::Signature = k
                    .try_sign(input.as_bytes())
                    .map_err(|_| "auth: signing failed".to_string())?;
                // JWS: r || s, 66 bytes each, as Go's jwt-go writes them.
                sig.to_bytes().to_vec()
            }
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// The user and auth revision a valid, unexpired token of this
    /// member's method names; None for any other.
    pub fn verify(&self, token: &str) -> Option<(String, u64)> {
        let (input, sig) = token.rsplit_once('.')?;
        let (header, claims) = input.split_once('.')?;
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header.get("alg")?.as_str()? != self.method.name() {
            return None;
        }
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        match (&self.public, self.method.verification()) {
            (Public::Ring(key), Some(alg)) => signature::UnparsedPublicKey::new(alg, key)
                .verify(input.as_bytes(), &sig)
                .ok()?,
            (Public::P521(key), _) => {
                let sig = p521::ecdsa::Signature::from_slice(&sig).ok()?;
                key.verify(input.as_bytes(), &sig).ok()?
            }
            _ => return None,
        }
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if claims.get("exp")?.as_u64()? <= now {
            return None;
        }
        let user = claims.get("username")?.as_str()?.to_string();
        let revision = claims.get("revision")?.as_u64()?;
        Some((user, revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openssl(args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }

    fn keys(dir: &Path, kind: &str) -> (String, String) {
        let (private, public) = (
            dir.join(format!("{kind}.pem")).display().to_string(),
            dir.join(format!("{kind}.pub")).display().to_string(),
        );
        match kind {
            "rsa" => openssl(&["genrsa", "-out", &private, "2048"]),
            // With `EC PARAMETERS` before the key (`openssl ecparam
            // -genkey` without `-noout`): skipped, where etcd's Go parser
            // reads only the first block and refuses the file.
            "p521" => openssl(&["ecparam", "-name", "secp521r1", "-genkey", "-out", &private]),
            _ => openssl(&[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &private,
            ]),
        }
        let tool = if kind == "rsa" { "rsa" } else { "ec" };
        openssl(&[tool, "-in", &private, "-pubout", "-out", &public]);
        (private, public)
    }

    #[test]
    fn tokens_verify_with_the_public_key_only() {
        let dir = tempfile::tempdir().unwrap();
        for (kind, method) in [
            ("rsa", "RS256"),
            ("rsa", "PS384"),
            ("ec", "ES256"),
            ("p521", "ES512"),
        ] {
            let (private, public) = keys(dir.path(), kind);
            let signer = Jwt::from_flag(&format!(
                "jwt,pub-key={public},priv-key={private},sign-method={method},ttl=10m"
            ))
            .unwrap()
            .unwrap();
            let verifier = Jwt::from_flag(&format!("jwt,pub-key={public},sign-method={method}"))
                .unwrap()
                .unwrap();
            let token = signer.sign("alice", 7).unwrap();
            assert_eq!(
                verifier.verify(&token),
                Some(("alice".into(), 7)),
                "{method}"
            );
            assert!(verifier.sign("alice", 7).is_err());
            // A changed claim, a cut signature, another method: refused.
            let mut parts: Vec<&str> = token.split('.').collect();
            let forged =
                URL_SAFE_NO_PAD.encode(r#"{"exp":99999999999,"revision":7,"username":"root"}"#);
            parts[1] = &forged;
            assert_eq!(verifier.verify(&parts.join(".")), None);
            assert_eq!(verifier.verify(&token[..token.len() - 4]), None);
            assert_eq!(verifier.verify("x.y.z"), None);
            assert_eq!(verifier.verify(""), None);
        }
    }

    /// ES512 (P-521, RustCrypto's `p521`): SEC1 and PKCS#8 private keys,
    /// signatures as JWS writes them (r || s, 66 bytes each), keys of
    /// another curve refused in words.
    #[test]
    fn es512_takes_sec1_and_pkcs8_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (sec1, public) = keys(dir.path(), "p521");
        let pkcs8 = dir.path().join("p521.pk8").display().to_string();
        openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", &sec1, "-out", &pkcs8]);
        let verifier = Jwt::from_flag(&format!("jwt,pub-key={public},sign-method=ES512"))
            .unwrap()
            .unwrap();
        for private in [&sec1, &pkcs8] {
            let signer = Jwt::from_flag(&format!(
                "jwt,pub-key={public},priv-key={private},sign-method=ES512"
            ))
            .unwrap()
            .unwrap();
            let token = signer.sign("root", 3).unwrap();
            let sig = URL_SAFE_NO_PAD
                .decode(token.rsplit('.').next().unwrap())
                .unwrap();
            assert_eq!(sig.len(), 132);
            assert_eq!(verifier.verify(&token), Some(("root".into(), 3)));
            let (header, _) = token.split_once('.').unwrap();
            assert_eq!(
                URL_SAFE_NO_PAD.decode(header).unwrap(),
                br#"{"alg":"ES512","typ":"JWT"}"#
            );
        }
        // A P-256 pair given as ES512, and ES512 keys given as ES256.
        let (p256, p256_public) = keys(dir.path(), "ec");
        for flag in [
            format!("jwt,pub-key={p256_public},priv-key={p256},sign-method=ES512"),
            format!("jwt,pub-key={public},priv-key={sec1},sign-method=ES256"),
            format!("jwt,pub-key={public},priv-key={p256},sign-method=ES512"),
        ] {
            let e = Jwt::from_flag(&flag).err().unwrap_or_default();
            assert!(e.starts_with("auth: "), "{flag}: {e}");
        }
        // An ES256 token is not an ES512 one.
        let p256_signer = Jwt::from_flag(&format!(
            "jwt,pub-key={p256_public},priv-key={p256},sign-method=ES256"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(verifier.verify(&p256_signer.sign("root", 3).unwrap()), None);
    }

    #[test]
    fn expired_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = keys(dir.path(), "rsa");
        let jwt = Jwt::from_flag(&format!(
            "jwt,pub-key={public},priv-key={private},sign-method=RS256,ttl=0s"
        ))
        .err()
        .unwrap_or_default();
        // A zero TTL makes tokens that are expired at once: the pair check
        // refuses to start with it.
        assert!(jwt.contains("not a pair"), "{jwt}");
    }

    #[test]
    fn bad_options_are_refused_in_words() {
        for (flag, want) in [
            ("jwt", "needs sign-method"),
            ("jwt,sign-method=RS256", "needs pub-key"),
            ("jwt,sign-method=HS256,pub-key=x", "not supported"),
            ("jwt,bogus", "not key=value"),
            ("jwt,color=red", "unknown option"),
            ("token", "unknown token type"),
            ("jwt,sign-method=RS256,pub-key=/nonexistent", "cannot read"),
        ] {
            let e = Jwt::from_flag(flag).err().unwrap_or_default();
            assert!(e.contains(want), "{flag}: {e}");
        }
        assert!(Jwt::from_flag("simple").unwrap().is_none());
    }
}
