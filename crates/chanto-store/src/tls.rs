//! What the stores share about TLS to the servers they connect to: reading
//! trusted roots (a PEM file, or the system's through rustls-native-certs,
//! which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`), and turning a rejected
//! server certificate into words an operator can act on. PostgreSQL
//! (`postgres_tls.rs`) and the object store (`s3.rs`) both use it.

use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{CertificateError, RootCertStore};

/// The roots in the PEM file `path` (`what` names the setting that gave it,
/// e.g. `sslrootcert`), or an error naming the setting, the file and the fix.
pub fn roots_from_file(what: &str, path: &Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let fix = "give the path of a PEM file holding the CA certificate(s) that signed the server's certificate";
    let bytes = std::fs::read(path).map_err(|e| format!("{what}={shown} cannot be read: {e}; {fix}"))?;
    let mut roots = RootCertStore::empty();
    let mut found = 0usize;
    for (i, cert) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
        let cert = cert.map_err(|e| format!("{what}={shown} is not a valid PEM file: {e}; {fix}"))?;
        found += 1;
        roots.add(cert).map_err(|e| {
            format!("{what}={shown}: certificate {} of the file is not a usable CA certificate: {e}; {fix}", i + 1)
        })?;
    }
    if found == 0 {
        return Err(format!(
            "{what}={shown} holds no PEM certificate (no \"-----BEGIN CERTIFICATE-----\" block); {fix} (a DER file converts with `openssl x509 -inform der -in ca.der -out ca.pem`)"
        ));
    }
    Ok(roots)
}

/// The roots this system trusts: `SSL_CERT_FILE` / `SSL_CERT_DIR` when set,
/// else the OS store. `why` says what needs them, for the error when there
/// are none.
pub fn system_roots(why: &str) -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        let env = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
            .iter()
            .filter_map(|k| std::env::var_os(k).map(|v| format!("{k}={}", v.to_string_lossy())))
            .collect::<Vec<_>>();
        return Err(format!(
            "{why} checks the server's certificate against the system's trusted roots, and none were found{}{}; install the ca-certificates package, or point SSL_CERT_FILE at a PEM bundle of the CAs to trust",
            if env.is_empty() { String::new() } else { format!(" (with {})", env.join(", ")) },
            if errors.is_empty() { String::new() } else { format!(": {}", errors.join("; ")) },
        ));
    }
    if ignored > 0 || !found.errors.is_empty() {
        tracing::warn!(
            ignored,
            errors = ?found.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            "some of the system's trusted roots could not be read; using the rest"
        );
    }
    Ok(roots)
}

/// How a server's certificate was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CertProblem {
    /// Not signed (through its chain) by a trusted root.
    UnknownIssuer,
    /// Valid, but not for the name (or address) connected to.
    WrongName,
    /// Expired, or not valid yet.
    OutOfDate,
    /// Anything else about the certificate (bad encoding, revoked, a bad
    /// signature, not for server use).
    Other,
}

/// What is wrong with the server's certificate, if `e` is a rejected one.
pub(crate) fn certificate_problem(e: &rustls::Error) -> Option<CertProblem> {
    let rustls::Error::InvalidCertificate(c) = e else { return None };
    Some(match c {
        CertificateError::UnknownIssuer => CertProblem::UnknownIssuer,
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => CertProblem::WrongName,
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => CertProblem::OutOfDate,
        _ => CertProblem::Other,
    })
}

/// The rustls error somewhere in `e`'s chain of causes (looking inside IO
/// errors, whose `source` skips the error they wrap: the HTTP client's is
/// an IO error inside an IO error).
pub(crate) fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        cur = match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_an_empty_and_a_non_pem_root_file_are_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = roots_from_file("sslrootcert", &missing).unwrap_err();
        assert!(e.starts_with(&format!("sslrootcert={} cannot be read: ", missing.display())), "{e}");
        assert!(e.contains("No such file") && e.contains("PEM file holding the CA"), "{e}");

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "this is not a certificate\n").unwrap();
        let e = roots_from_file("sslrootcert", &text).unwrap_err();
        assert!(e.contains("holds no PEM certificate") && e.contains("openssl x509 -inform der"), "{e}");

        // A PEM block that is a certificate in name only.
        let fake = dir.path().join("fake.pem");
        std::fs::write(&fake, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let e = roots_from_file("sslrootcert", &fake).unwrap_err();
        assert!(e.contains("certificate 1 of the file is not a usable CA certificate"), "{e}");

        // Broken base64 inside a block.
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").unwrap();
        let e = roots_from_file("sslrootcert", &broken).unwrap_err();
        assert!(e.contains("is not a valid PEM file"), "{e}");

        // A directory.
        let e = roots_from_file("sslrootcert", dir.path()).unwrap_err();
        assert!(e.contains("cannot be read"), "{e}");
    }

    #[test]
    fn certificate_errors_are_sorted_into_what_an_operator_fixes() {
        let cases = [
            (CertificateError::UnknownIssuer, Some(CertProblem::UnknownIssuer)),
            (CertificateError::NotValidForName, Some(CertProblem::WrongName)),
            (CertificateError::Expired, Some(CertProblem::OutOfDate)),
            (CertificateError::NotValidYet, Some(CertProblem::OutOfDate)),
            (CertificateError::BadSignature, Some(CertProblem::Other)),
        ];
        for (c, want) in cases {
            assert_eq!(certificate_problem(&rustls::Error::InvalidCertificate(c.clone())), want, "{c:?}");
        }
        assert_eq!(certificate_problem(&rustls::Error::DecryptError), None);
        // Found inside an IO error inside another error.
        let io = std::io::Error::other(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("request failed")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let outer = Outer(io);
        let found = find_rustls_error(&outer).and_then(certificate_problem);
        assert_eq!(found, Some(CertProblem::UnknownIssuer));
        // An IO error inside an IO error (as hyper's connector reports it).
        let nested = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
        ));
        let found = find_rustls_error(&nested).and_then(certificate_problem);
        assert_eq!(found, Some(CertProblem::WrongName));
    }
}
