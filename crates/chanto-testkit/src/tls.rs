//! A throwaway certificate authority for tests of TLS: [`TestCa`] makes a CA
//! (ECDSA P-256, valid for a week) with the `openssl` command and issues
//! server certificates ([`Leaf`]) for the names and addresses a test gives,
//! as PEM files. A server under test loads the leaf (PostgreSQL from its
//! files, an in-process server through [`Leaf::server_config`]); a client
//! trusts the CA through `sslrootcert=`, `SSL_CERT_FILE` or the like, so no
//! test touches the system's roots.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate authority whose files are in a directory of the test's.
pub struct TestCa {
    dir: PathBuf,
    name: String,
    issued: AtomicU32,
    _tmp: Option<tempfile::TempDir>,
}

/// A server certificate issued by a [`TestCa`], and its key.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8, mode 0600).
    pub key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path, what: &str) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("{what}: running openssl: {e} (TLS tests need the openssl command: `apt-get install openssl`)")
    });
    assert!(
        out.status.success(),
        "{what}: openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    /// A CA in a temp directory of its own (removed when dropped).
    pub fn new(name: &str) -> TestCa {
        let tmp = tempfile::Builder::new().prefix("chanto-ca-").tempdir().expect("a temp dir for a test CA");
        let mut ca = Self::in_dir(tmp.path(), name);
        ca._tmp = Some(tmp);
        ca
    }

    /// A CA whose files (`NAME.pem`, `NAME.key`, and what it issues) go in
    /// `dir`, which the caller removes.
    pub fn in_dir(dir: &Path, name: &str) -> TestCa {
        std::fs::create_dir_all(dir).expect("the CA's directory");
        let cnf = format!(
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = chanto test CA {name}\n\
             [ca_ext]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n\
             subjectKeyIdentifier = hash\n"
        );
        std::fs::write(dir.join(format!("{name}.cnf")), cnf).expect("writing the CA's openssl config");
        openssl(
            &[
                "req",
                "-config",
                &format!("{name}.cnf"),
                "-x509",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
                "-days",
                "7",
                "-extensions",
                "ca_ext",
            ],
            dir,
            "making a test CA",
        );
        TestCa { dir: dir.to_owned(), name: name.to_owned(), issued: AtomicU32::new(0), _tmp: None }
    }

    /// The CA's certificate (PEM): what a client is told to trust.
    pub fn cert(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    /// Issues a server certificate for `names`: each a DNS name or an IP
    /// address (both go in the subject alternative names, where clients look).
    pub fn issue(&self, names: &[&str]) -> Leaf {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let stem = format!("{}-leaf{n}", self.name);
        let sans: Vec<String> = names
            .iter()
            .map(|n| if n.parse::<std::net::IpAddr>().is_ok() { format!("IP:{n}") } else { format!("DNS:{n}") })
            .collect();
        let cnf = format!(
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = {cn}\n\
             [leaf_ext]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\nsubjectAltName = {sans}\nauthorityKeyIdentifier = keyid\n",
            cn = names.first().copied().unwrap_or("localhost"),
            sans = sans.join(", "),
        );
        std::fs::write(self.dir.join(format!("{stem}.cnf")), cnf).expect("writing the leaf's openssl config");
        let serial = format!("0x{:x}{:08x}", std::process::id(), n + 1);
        openssl(
            &[
                "req",
                "-config",
                &format!("{stem}.cnf"),
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{stem}.key"),
                "-out",
                &format!("{stem}.csr"),
            ],
            &self.dir,
            "making a server key",
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &format!("{stem}.csr"),
                "-CA",
                &format!("{}.pem", self.name),
                "-CAkey",
                &format!("{}.key", self.name),
                "-set_serial",
                &serial,
                "-days",
                "7",
                "-extfile",
                &format!("{stem}.cnf"),
                "-extensions",
                "leaf_ext",
                "-out",
                &format!("{stem}.pem"),
            ],
            &self.dir,
            "signing a server certificate",
        );
        let key = self.dir.join(format!("{stem}.key"));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod of the key");
        Leaf { cert: self.dir.join(format!("{stem}.pem")), key }
    }
}

impl Leaf {
    /// A rustls server configuration serving this certificate (ring; ALPN
    /// h2 and http/1.1), for an in-process server behind `tokio-rustls`.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .expect("reading the leaf certificate")
            .collect::<Result<_, _>>()
            .expect("a PEM certificate");
        let key = PrivateKeyDer::from_pem_file(&self.key).expect("reading the leaf key");
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("a usable certificate and key");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}
