//! Checks a certificate that a user uploads for a custom domain
//! (`chanto certs upload --domain D --cert FULLCHAIN.pem --key KEY.pem`)
//! before it is stored: the PEM files parse, the key is usable and belongs to
//! the leaf, the leaf is valid now, covers the domain, and the chain leads to a
//! trusted root.
//!
//! Pure: no IO and no clock; the caller passes the roots and the time. Every
//! refusal carries a stable code (the API returns it) and a message that says
//! what is wrong and what to do about it.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::pem::{self, PemObject as _, SectionKind};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer, ServerName, UnixTime,
};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, InconsistentKeys};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::x509::X509Name;

/// The most certificates a chain file may hold (the leaf and its intermediates).
pub const MAX_CHAIN_LEN: usize = 10;

const DAY_MILLIS: i64 = 86_400_000;

/// A certificate that passed every check, ready to store.
#[derive(Clone, PartialEq, Eq)]
pub struct CheckedCertificate {
    /// Hex BLAKE3 of the concatenated DER of the chain, leaf first (64 characters).
    pub id: String,
    /// The chain re-encoded as PEM: leaf first, only CERTIFICATE blocks, 64-column base64, LF line ends.
    pub chain_pem: String,
    /// The private key re-encoded as PEM, in the form it was given
    /// (PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
    pub key_pem: String,
    /// The leaf's DNS subject alternative names, lower-case, in certificate order.
    pub names: Vec<String>,
    /// The leaf's notBefore, unix milliseconds.
    pub not_before: i64,
    /// The leaf's notAfter, unix milliseconds.
    pub not_after: i64,
    /// The common name of the leaf's issuer (the whole DN string if it has no CN).
    pub issuer: String,
    /// Things worth telling the user that do not block the upload
    /// (e.g. "expires in 5 days (on 2026-12-11): ...", "signed with SHA-1: ...").
    pub warnings: Vec<String>,
}

impl fmt::Debug for CheckedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckedCertificate")
            .field("id", &self.id)
            .field("chain_pem", &format_args!("<{} bytes>", self.chain_pem.len()))
            .field("key_pem", &format_args!("<redacted>"))
            .field("names", &self.names)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("issuer", &self.issuer)
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// Why an upload was refused: a stable code (the API returns it) and a message that names what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertProblem {
    /// Stable machine-readable code: `cert_pem_invalid`, `key_pem_invalid`, `key_unsupported`,
    /// `key_mismatch`, `cert_expired`, `cert_not_yet_valid`, `names_do_not_cover`,
    /// `chain_incomplete` or `chain_invalid`.
    pub code: &'static str,
    /// Human-readable explanation, naming the offending certificate and the fix.
    pub message: String,
}

impl CertProblem {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl fmt::Display for CertProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for CertProblem {}

/// Checks an uploaded certificate chain and private key for `domain`.
///
/// `chain_pem` is the content of FULLCHAIN.pem (leaf first, then intermediates), `key_pem` the content
/// of KEY.pem, `domain` an already-validated lower-case DNS name (possibly a wildcard pattern such as
/// `*.example.com`, which then needs that exact wildcard among the leaf's names), `trust` the roots a
/// chain must lead to and `now_millis` the current time in unix milliseconds.
///
/// Checks run in a fixed order and the first failure is returned: PEM of the chain, PEM of the key,
/// key type, key/leaf match (and chain order), validity period, names, chain to a trusted root.
pub fn check_upload(
    chain_pem: &[u8],
    key_pem: &[u8],
    domain: &str,
    trust: &rustls::RootCertStore,
    now_millis: i64,
) -> Result<CheckedCertificate, CertProblem> {
    // 1. The certificate file.
    let ders = read_chain(chain_pem)?;
    let total = ders.len();
    let mut parsed = Vec::with_capacity(total);
    for (i, der) in ders.iter().enumerate() {
        match x509_parser::parse_x509_certificate(der.as_ref()) {
            Ok((_, cert)) => parsed.push(cert),
            Err(e) => {
                return Err(CertProblem::new(
                    "cert_pem_invalid",
                    format!(
                        "certificate {} of {total} does not parse as an X.509 certificate ({e}): export the chain again from your CA",
                        i + 1
                    ),
                ));
            }
        }
    }
    let leaf = &parsed[0];

    // 2. The key file.
    let key = read_key(key_pem)?;

    // 3. The key type.
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        CertProblem::new(
            "key_unsupported",
            format!("the private key cannot be loaded ({e}): use an RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519 key"),
        )
    })?;

    // 4. The key belongs to the leaf (and the leaf comes first).
    match CertifiedKey::from_der(ders.clone(), key.clone_key(), &provider) {
        Ok(_) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            let key_spki = signing_key.public_key();
            let owner =
                key_spki.as_ref().and_then(|spki| parsed.iter().position(|c| c.public_key().raw == spki.as_ref()));
            if let Some(k) = owner.filter(|&k| k > 0) {
                return Err(CertProblem::new(
                    "chain_incomplete",
                    format!(
                        "the chain is in the wrong order: the key belongs to certificate {} of {total} ({}), but the first certificate is {}: put the leaf first, then its intermediates",
                        k + 1,
                        describe(&parsed[k]),
                        describe(leaf)
                    ),
                ));
            }
            if leaf.is_ca() {
                return Err(CertProblem::new(
                    "chain_incomplete",
                    format!(
                        "the first certificate ({}) is a CA certificate, not the certificate for your domain, and the key belongs to none of the {total} certificates: put the leaf first and pass its key with --key",
                        describe(leaf)
                    ),
                ));
            }
            return Err(CertProblem::new(
                "key_mismatch",
                format!(
                    "the private key does not belong to the first certificate in the chain ({}): check that --key is the key this certificate was issued for",
                    describe(leaf)
                ),
            ));
        }
        Err(e @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)) => {
            return Err(CertProblem::new(
                "cert_pem_invalid",
                format!("certificate 1 of {total} cannot be used for TLS ({e}): export the chain again from your CA"),
            ));
        }
        Err(e) => {
            return Err(CertProblem::new(
                "key_unsupported",
                format!("the private key cannot be used with this certificate ({e})"),
            ));
        }
    }

    // 5. Validity period.
    let not_before = leaf.validity().not_before.timestamp().saturating_mul(1000);
    let not_after = leaf.validity().not_after.timestamp().saturating_mul(1000);
    if not_after < now_millis {
        return Err(CertProblem::new(
            "cert_expired",
            format!(
                "the certificate expired on {}, {}: renew it with your CA and upload the new one",
                format_date(not_after),
                ago(now_millis - not_after)
            ),
        ));
    }
    if not_before > now_millis {
        return Err(CertProblem::new(
            "cert_not_yet_valid",
            format!(
                "the certificate is not valid before {} ({}): upload it once it is valid, or check the clock of the machine that issued it",
                format_date(not_before),
                from_now(not_before - now_millis)
            ),
        ));
    }

    // 6. Names.
    let names = dns_names(leaf).map_err(|e| {
        CertProblem::new(
            "cert_pem_invalid",
            format!("certificate 1 of {total} has an unreadable subjectAltName extension ({e}): export it again from your CA"),
        )
    })?;
    if !names.iter().any(|n| name_covers(n, domain)) {
        let have = if names.is_empty() {
            "it has no DNS names in subjectAltName (a name only in the CN is ignored by browsers)".to_owned()
        } else {
            format!("it has {}", names.join(", "))
        };
        let hint = if let Some(base) = domain.strip_prefix("*.") {
            format!(
                "a certificate for {domain} needs the wildcard name {domain} itself (a name like a.{base} is not enough)"
            )
        } else {
            "a wildcard name *.parent covers exactly one label in its place".to_owned()
        };
        return Err(CertProblem::new(
            "names_do_not_cover",
            format!(
                "the certificate does not cover {domain}: {have}; {hint}: upload a certificate issued for {domain}, or add the domain the certificate is for"
            ),
        ));
    }

    // 7. The chain leads to a trusted root.
    verify_chain(&ders, &parsed, domain, trust, provider, now_millis)?;

    // 8. Warnings.
    let mut warnings = Vec::new();
    let left = not_after - now_millis;
    if left < 7 * DAY_MILLIS {
        warnings.push(format!(
            "expires in {} (on {}): less than 7 days left, renew it now",
            in_days(left),
            format_date(not_after)
        ));
    } else if left < 30 * DAY_MILLIS {
        warnings.push(format!(
            "expires in {} (on {}): less than 30 days left, renew it soon",
            in_days(left),
            format_date(not_after)
        ));
    }
    if is_sha1(leaf) {
        warnings.push(
            "signed with SHA-1: browsers distrust SHA-1 signatures; ask your CA to reissue it with SHA-256".to_owned(),
        );
    }

    let mut hasher = blake3::Hasher::new();
    for der in &ders {
        hasher.update(der.as_ref());
    }
    let id = hasher.finalize().to_hex().to_string();
    let chain_pem: String = ders.iter().map(|d| encode_pem("CERTIFICATE", d.as_ref())).collect();
    let key_pem = match &key {
        PrivateKeyDer::Pkcs1(k) => encode_pem("RSA PRIVATE KEY", k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(k) => encode_pem("EC PRIVATE KEY", k.secret_sec1_der()),
        _ => encode_pem("PRIVATE KEY", key.secret_der()),
    };

    Ok(CheckedCertificate {
        id,
        chain_pem,
        key_pem,
        names,
        not_before,
        not_after,
        issuer: common_name(leaf.issuer()),
        warnings,
    })
}

/// Reads the certificate file: only CERTIFICATE blocks, 1 to [`MAX_CHAIN_LEN`] of them, all decodable.
fn read_chain(input: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertProblem> {
    let invalid = |m: String| CertProblem::new("cert_pem_invalid", m);
    let blocks = pem_blocks(input);
    for (i, block) in blocks.iter().enumerate() {
        if block.label == "CERTIFICATE" {
            continue;
        }
        if block.label.ends_with("PRIVATE KEY") {
            return Err(invalid(format!(
                "the certificate file holds a {} block: pass the key with --key and the certificate chain with --cert",
                block.label
            )));
        }
        return Err(invalid(format!(
            "PEM block {} of the certificate file is a {} block: the file must hold only CERTIFICATE blocks, the leaf first, then its intermediates",
            i + 1,
            block.label
        )));
    }
    let total = blocks.len();
    if total == 0 {
        let message = if input.iter().all(u8::is_ascii_whitespace) {
            "the certificate file is empty: pass the PEM certificate chain (-----BEGIN CERTIFICATE-----) with --cert"
                .to_owned()
        } else if input.first() == Some(&0x30) {
            "the certificate file is not PEM (it looks like binary DER): convert it with `openssl x509 -inform der -in CERT.der -out cert.pem`".to_owned()
        } else {
            "the certificate file holds no CERTIFICATE block (-----BEGIN CERTIFICATE-----): pass the PEM certificate chain with --cert".to_owned()
        };
        return Err(invalid(message));
    }
    if total > MAX_CHAIN_LEN {
        return Err(invalid(format!(
            "the certificate file holds {total} certificates, more than the {MAX_CHAIN_LEN} accepted: keep the leaf and its intermediates, and leave out the root"
        )));
    }
    let mut ders = Vec::with_capacity(total);
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(input) {
        let position = ders.len() + 1;
        match item {
            Ok((SectionKind::Certificate, der)) => ders.push(CertificateDer::from(der)),
            Ok((kind, _)) => {
                return Err(invalid(format!(
                    "PEM block {position} of the certificate file is a {kind:?} block: the file must hold only CERTIFICATE blocks"
                )));
            }
            Err(e) => {
                return Err(invalid(format!(
                    "certificate {position} of {total} does not decode: {}: copy the file again, whole",
                    describe_pem_error(&e)
                )));
            }
        }
    }
    if ders.len() != total {
        return Err(invalid(format!(
            "the certificate file has {total} BEGIN CERTIFICATE lines but only {} complete certificates: copy the file again, whole",
            ders.len()
        )));
    }
    Ok(ders)
}

/// Reads the key file: exactly one unencrypted private key.
fn read_key(input: &[u8]) -> Result<PrivateKeyDer<'static>, CertProblem> {
    let invalid = |m: String| CertProblem::new("key_pem_invalid", m);
    let blocks = pem_blocks(input);
    let keys: Vec<&PemBlock> = blocks.iter().filter(|b| b.label.ends_with("PRIVATE KEY")).collect();
    if keys.iter().any(|b| b.encrypted || b.label == "ENCRYPTED PRIVATE KEY") {
        return Err(invalid(
            "the key is encrypted: decrypt it first, e.g. `openssl pkey -in KEY.pem -out plain.pem`".to_owned(),
        ));
    }
    if keys.is_empty() {
        let message = if blocks.iter().any(|b| b.label == "CERTIFICATE") {
            "the key file holds a CERTIFICATE block, not a private key: pass the certificate chain with --cert and its private key with --key".to_owned()
        } else if input.iter().all(u8::is_ascii_whitespace) {
            "the key file is empty: pass the certificate's private key (-----BEGIN PRIVATE KEY-----) with --key"
                .to_owned()
        } else {
            "the key file holds no PEM private key (-----BEGIN PRIVATE KEY-----): pass the certificate's private key with --key".to_owned()
        };
        return Err(invalid(message));
    }
    if keys.len() > 1 {
        return Err(invalid(format!(
            "the key file holds {} private keys: pass exactly one, the key of the first certificate in the chain",
            keys.len()
        )));
    }
    match keys[0].label.as_str() {
        "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {}
        "OPENSSH PRIVATE KEY" => {
            return Err(invalid(
                "the key is in OpenSSH format: TLS needs a PEM key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY), the one the certificate was requested with".to_owned(),
            ));
        }
        other => {
            return Err(CertProblem::new(
                "key_unsupported",
                format!(
                    "{other} keys are not supported: use an RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519 key"
                ),
            ));
        }
    }
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(input) {
        match item {
            Ok((SectionKind::PrivateKey, der)) => return Ok(PrivatePkcs8KeyDer::from(der).into()),
            Ok((SectionKind::RsaPrivateKey, der)) => return Ok(PrivatePkcs1KeyDer::from(der).into()),
            Ok((SectionKind::EcPrivateKey, der)) => return Ok(PrivateSec1KeyDer::from(der).into()),
            Ok(_) => {}
            Err(e) => {
                return Err(invalid(format!(
                    "the key file does not decode: {}: copy the file again, whole",
                    describe_pem_error(&e)
                )));
            }
        }
    }
    Err(invalid("the private key block does not decode: copy the file again, whole".to_owned()))
}

/// One `-----BEGIN LABEL-----` block seen in a PEM file.
struct PemBlock {
    label: String,
    /// A legacy `Proc-Type: 4,ENCRYPTED` header inside the block.
    encrypted: bool,
}

/// Lists the blocks of a PEM file by their BEGIN lines, known kinds or not (the
/// pki-types parser skips labels it does not know, such as `ENCRYPTED PRIVATE KEY`).
fn pem_blocks(input: &[u8]) -> Vec<PemBlock> {
    let mut blocks: Vec<PemBlock> = Vec::new();
    let mut inside = false;
    for line in input.split(|b| *b == b'\n' || *b == b'\r') {
        let line = line.trim_ascii_end();
        if let Some(rest) = line.strip_prefix(b"-----BEGIN ") {
            if let Some(label) = rest.strip_suffix(b"-----") {
                blocks.push(PemBlock { label: String::from_utf8_lossy(label).into_owned(), encrypted: false });
                inside = true;
            }
        } else if line.starts_with(b"-----END ") {
            inside = false;
        } else if inside
            && line.starts_with(b"Proc-Type:")
            && line.windows(9).any(|w| w == b"ENCRYPTED")
            && let Some(block) = blocks.last_mut()
        {
            block.encrypted = true;
        }
    }
    blocks
}

fn describe_pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "its END line is missing (is the file truncated?)".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "its BEGIN line is malformed".to_owned(),
        pem::Error::Base64Decode(e) => format!("its base64 is invalid ({e})"),
        other => other.to_string(),
    }
}

/// Verifies the chain to a root in `trust` and explains the failure.
fn verify_chain(
    ders: &[CertificateDer<'static>],
    parsed: &[X509Certificate<'_>],
    domain: &str,
    trust: &rustls::RootCertStore,
    provider: rustls::crypto::CryptoProvider,
    now_millis: i64,
) -> Result<(), CertProblem> {
    let leaf = &parsed[0];
    let total = parsed.len();
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(trust.clone()), Arc::new(provider)).build().map_err(
            |e| CertProblem::new("chain_incomplete", format!("no trusted roots to verify the chain against ({e})")),
        )?;
    let concrete = match domain.strip_prefix('*') {
        Some(rest) => format!("a{rest}"),
        None => domain.to_owned(),
    };
    let server_name = ServerName::try_from(concrete).map_err(|e| {
        CertProblem::new("chain_invalid", format!("{domain} cannot be checked against the certificate ({e})"))
    })?;
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_millis(u64::try_from(now_millis).unwrap_or(0)));
    let err = match verifier.verify_server_cert(&ders[0], &ders[1..], &server_name, &[], now) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    match err {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            if leaf.is_ca() {
                return Err(CertProblem::new(
                    "chain_incomplete",
                    format!(
                        "the first certificate ({}) is a CA certificate, not the certificate for your domain: put the leaf first, then its intermediates",
                        describe(leaf)
                    ),
                ));
            }
            // Follow issuer links through the file to the certificate whose issuer is missing.
            let mut at = 0;
            let mut seen = vec![false; total];
            seen[0] = true;
            while let Some(next) =
                (0..total).find(|&j| !seen[j] && parsed[j].subject().as_raw() == parsed[at].issuer().as_raw())
            {
                seen[next] = true;
                at = next;
            }
            let top = &parsed[at];
            let message = if top.subject().as_raw() == top.issuer().as_raw() {
                if at == 0 {
                    format!(
                        "the certificate is self-signed ({}) and does not lead to a trusted root: get one from a public CA (or let chanto issue one)",
                        describe(top)
                    )
                } else {
                    format!(
                        "the chain ends in certificate {} of {total} ({}), a root that is not trusted: use a certificate from a public CA",
                        at + 1,
                        describe(top)
                    )
                }
            } else if at == 0 {
                format!(
                    "the chain does not lead to a trusted root: the file holds the leaf but not the intermediate that signed it (issuer {}): append the intermediate certificate(s) to FULLCHAIN.pem, leaf first",
                    dn_label(top.issuer())
                )
            } else {
                format!(
                    "the chain does not lead to a trusted root: certificate {} of {total} ({}) was issued by {}, which is neither in the file nor a trusted root: append that intermediate to FULLCHAIN.pem, after the one it signed",
                    at + 1,
                    describe(top),
                    dn_label(top.issuer())
                )
            };
            Err(CertProblem::new("chain_incomplete", message))
        }
        rustls::Error::InvalidCertificate(
            CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. },
        ) if parsed.iter().any(is_sha1) => {
            let k = parsed.iter().position(is_sha1).unwrap_or(0);
            Err(CertProblem::new(
                "chain_invalid",
                format!(
                    "certificate {} of {total} ({}) is signed with SHA-1, which is no longer accepted: ask your CA to reissue it with SHA-256",
                    k + 1,
                    describe(&parsed[k])
                ),
            ))
        }
        other => Err(CertProblem::new("chain_invalid", format!("the certificate chain does not verify: {other}"))),
    }
}

/// The leaf's DNS SANs, lower-case, without a trailing dot.
fn dns_names(cert: &X509Certificate<'_>) -> Result<Vec<String>, x509_parser::error::X509Error> {
    let mut names = Vec::new();
    if let Some(san) = cert.subject_alternative_name()? {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                let n = n.trim_end_matches('.').to_ascii_lowercase();
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
    }
    Ok(names)
}

/// Whether the certificate name `san` covers `domain`. A wildcard domain needs the same wildcard;
/// a wildcard name covers exactly one label in its place.
pub(crate) fn name_covers(san: &str, domain: &str) -> bool {
    if san == domain {
        return true;
    }
    if domain.starts_with('*') {
        return false;
    }
    match (san.strip_prefix("*."), domain.split_once('.')) {
        (Some(base), Some((label, rest))) => !label.is_empty() && rest == base,
        _ => false,
    }
}

fn is_sha1(cert: &X509Certificate<'_>) -> bool {
    matches!(
        cert.signature_algorithm.algorithm.to_id_string().as_str(),
        "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" | "1.2.840.10040.4.3" | "1.3.14.3.2.29"
    )
}

/// The CN of a name, or the whole DN string if it has none.
fn common_name(name: &X509Name<'_>) -> String {
    name.iter_common_name().find_map(|cn| cn.as_str().ok()).map(str::to_owned).unwrap_or_else(|| name.to_string())
}

/// `CN=...` for a name with a CN, the whole DN string otherwise.
fn dn_label(name: &X509Name<'_>) -> String {
    match name.iter_common_name().find_map(|cn| cn.as_str().ok()) {
        Some(cn) => format!("CN={cn}"),
        None => name.to_string(),
    }
}

/// `CN=..., names a, b` for messages about a certificate.
fn describe(cert: &X509Certificate<'_>) -> String {
    let label = dn_label(cert.subject());
    match dns_names(cert) {
        Ok(names) if !names.is_empty() => format!("{label}, names {}", names.join(", ")),
        _ => label,
    }
}

fn encode_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

fn plural_days(days: i64) -> String {
    if days == 1 { "1 day".to_owned() } else { format!("{days} days") }
}

/// "5 days" / "less than a day" for a positive duration in milliseconds.
fn in_days(millis: i64) -> String {
    let days = millis / DAY_MILLIS;
    if days == 0 { "less than a day".to_owned() } else { plural_days(days) }
}

fn ago(millis: i64) -> String {
    let days = millis / DAY_MILLIS;
    if days == 0 { "less than a day ago".to_owned() } else { format!("{} ago", plural_days(days)) }
}

fn from_now(millis: i64) -> String {
    format!("in {}", in_days(millis))
}

/// `YYYY-MM-DD` (UTC) of a unix time in milliseconds.
fn format_date(millis: i64) -> String {
    let (y, m, d) = civil_from_days(millis.div_euclid(DAY_MILLIS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose, date_time_ymd,
    };
    use rustls::RootCertStore;

    /// 2026-06-15T12:00:00Z.
    fn now() -> i64 {
        date_time_ymd(2026, 6, 15).unix_timestamp() * 1000 + 12 * 3_600_000
    }

    struct Pki {
        root: CertifiedIssuer<'static, KeyPair>,
        inter: CertifiedIssuer<'static, KeyPair>,
        trust: RootCertStore,
    }

    fn ca_params(cn: &str) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2040, 1, 1);
        params
    }

    fn pki() -> Pki {
        pki_named("chanto test")
    }

    fn pki_named(prefix: &str) -> Pki {
        let root =
            CertifiedIssuer::self_signed(ca_params(&format!("{prefix} root")), KeyPair::generate().unwrap()).unwrap();
        let inter = CertifiedIssuer::signed_by(
            ca_params(&format!("{prefix} intermediate")),
            KeyPair::generate().unwrap(),
            &root,
        )
        .unwrap();
        let mut trust = RootCertStore::empty();
        trust.add(root.der().clone()).unwrap();
        Pki { root, inter, trust }
    }

    struct Leaf {
        cert_pem: String,
        der: Vec<u8>,
        key_pem: String,
    }

    fn leaf_with(
        names: &[&str],
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
        issuer: &Issuer<'_, KeyPair>,
    ) -> Leaf {
        let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        Leaf { cert_pem: cert.pem(), der: cert.der().to_vec(), key_pem: key.serialize_pem() }
    }

    fn leaf(names: &[&str], issuer: &Issuer<'_, KeyPair>) -> Leaf {
        leaf_with(names, (2026, 1, 1), (2026, 12, 31), issuer)
    }

    fn full_chain(leaf: &Leaf, pki: &Pki) -> String {
        format!("{}{}", leaf.cert_pem, pki.inter.pem())
    }

    fn check(chain: &str, key: &str, domain: &str, pki: &Pki) -> Result<CheckedCertificate, CertProblem> {
        check_upload(chain.as_bytes(), key.as_bytes(), domain, &pki.trust, now())
    }

    #[track_caller]
    fn expect_code(result: Result<CheckedCertificate, CertProblem>, code: &str) -> String {
        match result {
            Ok(ok) => panic!("expected {code}, got Ok({ok:?})"),
            Err(p) => {
                assert_eq!(p.code, code, "message: {}", p.message);
                p.message
            }
        }
    }

    #[test]
    fn valid_leaf_and_intermediate_is_accepted() {
        let pki = pki();
        let leaf = leaf(&["docs.example.com", "Www.Example.com"], &pki.inter);
        let chain = full_chain(&leaf, &pki);
        let ok = check(&chain, &leaf.key_pem, "docs.example.com", &pki).unwrap();
        assert_eq!(ok.names, vec!["docs.example.com", "www.example.com"]);
        assert_eq!(ok.issuer, "chanto test intermediate");
        assert_eq!(ok.not_before, date_time_ymd(2026, 1, 1).unix_timestamp() * 1000);
        assert_eq!(ok.not_after, date_time_ymd(2026, 12, 31).unix_timestamp() * 1000);
        assert!(ok.warnings.is_empty(), "{:?}", ok.warnings);

        assert_eq!(ok.id.len(), 64);
        assert!(ok.id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let mut concat = leaf.der.clone();
        concat.extend_from_slice(pki.inter.der());
        assert_eq!(ok.id, blake3::hash(&concat).to_hex().to_string());
        // Stable: same input, same id; and CRLF / surrounding text do not change it.
        let again = check(&chain, &leaf.key_pem, "docs.example.com", &pki).unwrap();
        assert_eq!(again.id, ok.id);
        let messy = format!("subject=CN=docs.example.com\r\n{}\r\n\r\n", chain.replace('\n', "\r\n"));
        let messy = check(&messy, &leaf.key_pem, "docs.example.com", &pki).unwrap();
        assert_eq!(messy.id, ok.id);
        assert_eq!(messy.chain_pem, ok.chain_pem);

        // chain_pem round-trips: the same certificates, leaf first, only CERTIFICATE blocks.
        let back: Vec<CertificateDer<'_>> =
            CertificateDer::pem_slice_iter(ok.chain_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].as_ref(), &leaf.der[..]);
        assert_eq!(back[1].as_ref(), pki.inter.der().as_ref());
        assert_eq!(ok.chain_pem.matches("-----BEGIN ").count(), 2);
        let rechecked = check(&ok.chain_pem, &ok.key_pem, "docs.example.com", &pki).unwrap();
        assert_eq!(rechecked, ok);

        // The key round-trips as PKCS#8.
        assert!(ok.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let key = PrivateKeyDer::from_pem_slice(ok.key_pem.as_bytes()).unwrap();
        let original = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        assert_eq!(key.secret_der(), original.secret_der());
        assert!(!format!("{ok:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn wildcard_covers_exactly_one_label() {
        let pki = pki();
        let leaf = leaf(&["*.example.com"], &pki.inter);
        let chain = full_chain(&leaf, &pki);
        let ok = check(&chain, &leaf.key_pem, "*.example.com", &pki).unwrap();
        assert_eq!(ok.names, vec!["*.example.com"]);
        check(&chain, &leaf.key_pem, "a.example.com", &pki).unwrap();
        for domain in ["example.com", "a.b.example.com", "a.example.org"] {
            let message = expect_code(check(&chain, &leaf.key_pem, domain, &pki), "names_do_not_cover");
            assert!(message.contains(domain) && message.contains("*.example.com"), "{message}");
        }
    }

    #[test]
    fn wildcard_domain_needs_the_wildcard_name() {
        let pki = pki();
        let leaf = leaf(&["a.example.com", "example.com"], &pki.inter);
        let chain = full_chain(&leaf, &pki);
        let message = expect_code(check(&chain, &leaf.key_pem, "*.example.com", &pki), "names_do_not_cover");
        assert!(message.contains("a.example.com, example.com"), "{message}");
        let message = expect_code(check(&chain, &leaf.key_pem, "docs.example.com", &pki), "names_do_not_cover");
        assert!(message.contains("it has a.example.com, example.com"), "{message}");
    }

    #[test]
    fn cert_file_garbage_empty_and_binary() {
        let pki = pki();
        let leaf = leaf(&["docs.example.com"], &pki.inter);
        let message = expect_code(
            check("this is not a certificate\n", &leaf.key_pem, "docs.example.com", &pki),
            "cert_pem_invalid",
        );
        assert!(message.contains("no CERTIFICATE block"), "{message}");
        let message = expect_code(check("", &leaf.key_pem, "docs.example.com", &pki), "cert_pem_invalid");
        assert!(message.contains("empty"), "{message}");
        let message = expect_code(
            check_upload(&leaf.der, leaf.key_pem.as_bytes(), "docs.example.com", &pki.trust, now()),
            "cert_pem_invalid",
        );
        assert!(message.contains("DER"), "{message}");
        let message = expect_code(
            check(
                "-----BEGIN CERTIFICATE-----\n!!!!not base64!!!!\n-----END CERTIFICATE-----\n",
                &leaf.key_pem,
                "docs.example.com",
                &pki,
            ),
            "cert_pem_invalid",
        );
        assert!(message.contains("certificate 1 of 1"), "{message}");
    }

    #[test]
    fn cert_file_truncated() {
        let pki = pki();
        let leaf = leaf(&["docs.example.com"], &pki.inter);
        let chain = full_chain(&leaf, &pki);
        // The file cut off in the middle of the intermediate.
        let cut = &chain[..leaf.cert_pem.len() + 200];
        let message = expect_code(check(cut, &leaf.key_pem, "docs.example.com", &pki), "cert_pem_invalid");
        assert!(message.contains("certificate 2 of 2") && message.contains("END line"), "{message}");
        // Base64 lines missing from the middle of the leaf: decodes to a broken certificate, or not at all.
        let lines: Vec<&str> = leaf.cert_pem.lines().collect();
        let mut shortened: Vec<&str> = lines[..3].to_vec();
        shortened.extend(&lines[lines.len() - 2..]);
        let shortened = format!("{}\n{}", shortened.join("\n"), pki.inter.pem());
        let message = expect_code(check(&shortened, &leaf.key_pem, "docs.example.com", &pki), "cert_pem_invalid");
        assert!(message.contains("certificate 1 of 2"), "{message}");
    }

    #[test]
    fn key_file_given_as_cert() {
        let pki = pki();
        let leaf = leaf(&["docs.example.com"], &pki.inter);
        let message = expect_code(check(&leaf.key_pem, &leaf.key_pem, "docs.example.com", &pki), "cert_pem_invalid");
        assert!(message.contains("holds a PRIVATE KEY block") && message.contains("--key"), "{message}");
        // Also when the key is appended to the chain.
        let chain = format!("{}{}", full_chain(&leaf, &pki), leaf.key_pem);
        expect_code(check(&chain, &leaf.key_pem, "docs.example.com", &pki), "cert_pem_invalid");
    }

    #[test]
    fn more_than_ten_certificates() {
        let pki = pki();
        let leaf = leaf(&["docs.example.com"], &pki.inter);
        let ten = format!("{}{}", leaf.cert_pem, pki.inter.pem().repeat(9));
        check(&ten, &leaf.key_pem, "docs.example.com", &pki).unwrap();
        let eleven = format!("{ten}{}", pki.inter.pem());
        let message = expect_code(check(&eleven, &leaf.key_pem, "docs.example.com", &pki), "cert_pem_invalid");
        assert!(message.contains("11 certificates"), "{message}");
    }

    #[test]
    fn encrypted_key() {
        let pki = pki();
        let leaf = leaf(&["docs.example.com"], &pki.inter);
        let chain = full_chain(&leaf, &pki);
        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let message = expect_code(check(&chain, encrypted, "docs.example.com", &pki), "key_pem_invalid");
        assert!(message.contains("encrypted") && message.contains("openssl pkey"), "{message}");
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let message = expect_code(check(&chain, legacy, "docs.example.com", &pki), "key_pem_invalid");
        assert!(message.contains("encrypted"), "{message}");
    }

    #[test]
    fn missing_two_or_certificate_as_key() {
        let pki = pki();
        let leaf = leaf(&["docs.example.com"], &pki.inter);
        let chain = full_chain(&leaf, &pki);
        let message = expect_code(check(&chain, "", "docs.example.com", &pki), "key_pem_invalid");
        assert!(message.contains("empty"), "{message}");
        let message = expect_code(check(&chain, "garbage", "docs.example.com", &pki), "key_pem_invalid");
        assert!(message.contains("no PEM private key"), "{message}");
        let two = format!("{}{}", leaf.key_pem, KeyPair::generate().unwrap().serialize_pem());
        let message = expect_code(check(&chain, &two, "docs.example.com", &pki), "key_pem_invalid");
        assert!(message.contains("2 private keys"), "{message}");
        let message = expect_code(check(&chain, &leaf.cert_pem, "docs.example.com", &pki), "key_pem_invalid");
        assert!(message.contains("CERTIFICATE block"), "{message}");
    }

    #[test]
    fn unsupported_key() {
        let pki = pki();
        let leaf = leaf(&["docs.example.com"], &pki.inter);
        let chain = full_chain(&leaf, &pki);
        let not_a_key = encode_pem("PRIVATE KEY", b"\x30\x03\x02\x01\x00");
        expect_code(check(&chain, &not_a_key, "docs.example.com", &pki), "key_unsupported");
        let dsa = "-----BEGIN DSA PRIVATE KEY-----\nAAAA\n-----END DSA PRIVATE KEY-----\n";
        let message = expect_code(check(&chain, dsa, "docs.example.com", &pki), "key_unsupported");
        assert!(message.contains("DSA"), "{message}");
    }

    #[test]
    fn key_of_another_certificate() {
        let pki = pki();
        let leaf = leaf(&["docs.example.com"], &pki.inter);
        let other = leaf_with(&["other.example.com"], (2026, 1, 1), (2026, 12, 31), &pki.inter);
        let chain = full_chain(&leaf, &pki);
        let message = expect_code(check(&chain, &other.key_pem, "docs.example.com", &pki), "key_mismatch");
        assert!(message.contains("CN=docs.example.com") && message.contains("--key"), "{message}");
    }

    #[test]
    fn expired_and_not_yet_valid() {
        let pki = pki();
        let expired = leaf_with(&["docs.example.com"], (2026, 1, 1), (2026, 6, 14), &pki.inter);
        let message =
            expect_code(check(&full_chain(&expired, &pki), &expired.key_pem, "docs.example.com", &pki), "cert_expired");
        assert!(message.contains("expired on 2026-06-14, 1 day ago"), "{message}");
        let future = leaf_with(&["docs.example.com"], (2026, 7, 1), (2027, 7, 1), &pki.inter);
        let message = expect_code(
            check(&full_chain(&future, &pki), &future.key_pem, "docs.example.com", &pki),
            "cert_not_yet_valid",
        );
        assert!(message.contains("not valid before 2026-07-01 (in 15 days)"), "{message}");
    }

    #[test]
    fn leaf_without_intermediate() {
        let pki = pki();
        let leaf = leaf(&["docs.example.com"], &pki.inter);
        let message = expect_code(check(&leaf.cert_pem, &leaf.key_pem, "docs.example.com", &pki), "chain_incomplete");
        assert!(message.contains("issuer CN=chanto test intermediate"), "{message}");
        assert!(message.contains("append the intermediate"), "{message}");
        // Signed directly by the root, the leaf alone is enough.
        let direct = leaf_with(&["docs.example.com"], (2026, 1, 1), (2026, 12, 31), &pki.root);
        check(&direct.cert_pem, &direct.key_pem, "docs.example.com", &pki).unwrap();
    }

    #[test]
    fn untrusted_root_and_self_signed() {
        let pki = pki();
        let other = pki_named("elsewhere");
        let leaf = leaf(&["docs.example.com"], &other.inter);
        let chain = format!("{}{}", full_chain(&leaf, &other), other.root.pem());
        let message = expect_code(check(&chain, &leaf.key_pem, "docs.example.com", &pki), "chain_incomplete");
        assert!(message.contains("certificate 3 of 3") && message.contains("not trusted"), "{message}");
        let chain = full_chain(&leaf, &other);
        let message = expect_code(check(&chain, &leaf.key_pem, "docs.example.com", &pki), "chain_incomplete");
        assert!(message.contains("certificate 2 of 2") && message.contains("CN=elsewhere root"), "{message}");

        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["docs.example.com".to_owned()]).unwrap();
        let own = params.self_signed(&key).unwrap();
        let message =
            expect_code(check(&own.pem(), &key.serialize_pem(), "docs.example.com", &pki), "chain_incomplete");
        assert!(message.contains("self-signed"), "{message}");
    }

    #[test]
    fn chain_in_wrong_order() {
        let pki = pki();
        let leaf = leaf(&["docs.example.com"], &pki.inter);
        let chain = format!("{}{}", pki.inter.pem(), leaf.cert_pem);
        let message = expect_code(check(&chain, &leaf.key_pem, "docs.example.com", &pki), "chain_incomplete");
        assert!(message.contains("put the leaf first") && message.contains("certificate 2 of 2"), "{message}");
    }

    #[test]
    fn intermediate_expired_is_chain_invalid() {
        let pki = pki();
        let mut params = ca_params("chanto old intermediate");
        params.not_after = date_time_ymd(2026, 6, 1);
        let old = CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &pki.root).unwrap();
        let leaf = leaf(&["docs.example.com"], &old);
        let chain = format!("{}{}", leaf.cert_pem, old.pem());
        let message = expect_code(check(&chain, &leaf.key_pem, "docs.example.com", &pki), "chain_invalid");
        assert!(message.contains("does not verify"), "{message}");
    }

    #[test]
    fn expiry_warnings() {
        let pki = pki();
        let soon = leaf_with(&["docs.example.com"], (2026, 1, 1), (2026, 7, 6), &pki.inter);
        let ok = check(&full_chain(&soon, &pki), &soon.key_pem, "docs.example.com", &pki).unwrap();
        assert_eq!(ok.warnings.len(), 1, "{:?}", ok.warnings);
        assert!(ok.warnings[0].starts_with("expires in 20 days (on 2026-07-06)"), "{:?}", ok.warnings);
        assert!(ok.warnings[0].contains("30 days"), "{:?}", ok.warnings);

        let sooner = leaf_with(&["docs.example.com"], (2026, 1, 1), (2026, 6, 19), &pki.inter);
        let ok = check(&full_chain(&sooner, &pki), &sooner.key_pem, "docs.example.com", &pki).unwrap();
        assert_eq!(ok.warnings.len(), 1, "{:?}", ok.warnings);
        assert!(ok.warnings[0].starts_with("expires in 3 days (on 2026-06-19)"), "{:?}", ok.warnings);
        assert!(ok.warnings[0].contains("7 days"), "{:?}", ok.warnings);
    }

    #[test]
    fn dates_and_coverage_helpers() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(-1), "1969-12-31");
        assert_eq!(format_date(date_time_ymd(2024, 2, 29).unix_timestamp() * 1000 + 5), "2024-02-29");
        assert_eq!(format_date(date_time_ymd(2026, 12, 11).unix_timestamp() * 1000), "2026-12-11");
        assert!(name_covers("*.example.com", "a.example.com"));
        assert!(name_covers("*.example.com", "*.example.com"));
        assert!(!name_covers("*.example.com", "example.com"));
        assert!(!name_covers("*.example.com", "a.b.example.com"));
        assert!(!name_covers("a.example.com", "*.example.com"));
    }
}
