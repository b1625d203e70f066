//! Just enough DER to read what TLS and auth need: the common name of a
//! client certificate (`--client-cert-auth` users) and the key bits of a
//! public key (JWT verification). Every read is bounds-checked: a damaged
//! input is None, never a panic.

/// One DER element at the start of `b`: (tag, contents, what follows).
pub fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &d| (a << 8) | d as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
/// 2.5.4.3, id-at-commonName.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The elements of a SEQUENCE's or SET's contents, in order (stops at
/// the first that does not parse).
pub fn elements(mut b: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, contents, rest) = element(b)?;
        b = rest;
        Some((tag, contents))
    })
}

/// The key bits of a SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`): for RSA
/// the PKCS#1 RSAPublicKey, for EC the point.
pub fn spki_key(spki: &[u8]) -> Option<&[u8]> {
    let (SEQUENCE, body, _) = element(spki)? else {
        return None;
    };
    let mut parts = elements(body);
    let (SEQUENCE, _) = parts.next()? else {
        return None;
    };
    let (BIT_STRING, bits) = parts.next()? else {
        return None;
    };
    // The first byte counts unused bits: none in a key.
    bits.strip_prefix(&[0])
}

/// The subject's common name of an X.509 certificate, as Go's
/// `Subject.CommonName` reads it (the last one, if several).
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (SEQUENCE, body, _) = element(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(body)? else {
        return None;
    };
    let mut fields = elements(tbs).peekable();
    // [0] version, when present.
    if fields.peek().is_some_and(|(tag, _)| *tag == 0xa0) {
        fields.next();
    }
    // serialNumber, signature, issuer, validity, then subject.
    let (SEQUENCE, subject) = fields.nth(4)? else {
        return None;
    };
    let mut name = None;
    for (tag, rdn) in elements(subject) {
        if tag != SET {
            return None;
        }
        for (tag, attr) in elements(rdn) {
            if tag != SEQUENCE {
                return None;
            }
            let mut a = elements(attr);
            if let (Some((OID, oid)), Some((_, value))) = (a.next(), a.next()) {
                if oid == COMMON_NAME {
                    name = Some(String::from_utf8_lossy(value).into_owned());
                }
            }
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_of_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "ferrokv");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()).as_deref(), Some("alice"));
        use rcgen::PublicKeyData;
        let spki = key.subject_public_key_info();
        assert_eq!(spki_key(&spki), Some(key.der_bytes()));
        // Every cut of the certificate reads as None or a name, never a panic.
        for cut in 0..cert.der().len() {
            let _ = common_name(&cert.der()[..cut]);
            let _ = spki_key(&spki[..cut.min(spki.len())]);
        }
    }
}
