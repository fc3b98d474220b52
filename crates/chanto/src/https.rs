//! The edge's HTTPS listener (`chanto serve --https ADDR`): certificates
//! come from the metadata store, their keys opened with the control plane's
//! sealing key, and are served by SNI.

use std::sync::Arc;

use async_trait::async_trait;
use chanto_control::domains::DomainService;
use chanto_edge::certs::{CertSource, EdgeCerts};
use chanto_edge::tls::CertStore;
use chanto_store::MetaStore;
use futures_util::StreamExt;

/// Certificates as the control plane stores them.
struct StoredCerts {
    meta: Arc<dyn MetaStore>,
    keys: Arc<DomainService>,
}

#[async_trait]
impl CertSource for StoredCerts {
    async fn certificate(&self, id: &str) -> Result<(String, String), String> {
        let cert = self
            .meta
            .certificate(id)
            .await
            .map_err(|e| format!("reading certificate {id}: {e}"))?
            .ok_or_else(|| format!("certificate {id} is not in the store"))?;
        let key = self.keys.open_key(&cert)?;
        Ok((cert.chain_pem, key))
    }
}

/// The certificates of the custom domains in `meta`, for the edge's HTTPS
/// listener; `keys` opens their sealed keys.
pub(crate) fn stored_certs(meta: Arc<dyn MetaStore>, keys: Arc<DomainService>) -> Arc<EdgeCerts> {
    Arc::new(EdgeCerts::new(Arc::new(CertStore::new()), Arc::new(StoredCerts { meta, keys })))
}

/// Largest certificate answer an edge node reads (a long chain and a key fit many times).
const MAX_NODE_CERTIFICATE: usize = 1 << 20;

/// Certificates as an edge node gets them: from its disk
/// (`DATA/edge/certs/ID.json`, mode 0600), else from the control plane
/// (`GET /api/v1/nodes/certificates/ID`, then kept on disk), so a node that
/// restarts while the control plane is down serves HTTPS as before. Each is
/// checked against its id (BLAKE3 of the chain's DER) wherever it came from.
pub(crate) struct NodeCerts {
    pub(crate) http: reqwest::Client,
    pub(crate) control: String,
    pub(crate) token: String,
    pub(crate) dir: std::path::PathBuf,
}

/// The id of a chain: hex BLAKE3 over its DER certificates, leaf first (as
/// the control plane names it).
fn chain_id(chain_pem: &str) -> Result<String, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut hasher = blake3::Hasher::new();
    let mut n = 0;
    for der in CertificateDer::pem_slice_iter(chain_pem.as_bytes()) {
        let der = der.map_err(|e| format!("the chain does not parse: {e}"))?;
        hasher.update(der.as_ref());
        n += 1;
    }
    if n == 0 {
        return Err("the chain holds no certificate".into());
    }
    Ok(hasher.finalize().to_hex().to_string())
}

impl NodeCerts {
    fn path(&self, id: &str) -> std::path::PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn checked(id: &str, cert: chanto_store::node_wire::NodeCertificate) -> Result<(String, String), String> {
        if cert.id != id || chain_id(&cert.chain_pem)? != id {
            return Err(format!("certificate {id}: the chain received is another one (its id does not match)"));
        }
        Ok((cert.chain_pem, cert.key_pem))
    }

    fn kept(&self, id: &str) -> Option<(String, String)> {
        let path = self.path(id);
        let bytes = std::fs::read(&path).ok()?;
        let parsed = serde_json::from_slice(&bytes).map_err(|e| e.to_string()).and_then(|c| Self::checked(id, c));
        match parsed {
            Ok(pair) => Some(pair),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "a kept certificate is damaged; fetching it again");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    async fn fetch(&self, id: &str) -> Result<chanto_store::node_wire::NodeCertificate, String> {
        let url = format!("{}/api/v1/nodes/certificates/{id}", self.control);
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("asking {} for certificate {id}: {e}", self.control))?;
        let status = resp.status();
        if resp.content_length().is_some_and(|n| n > MAX_NODE_CERTIFICATE as u64) {
            return Err(format!("certificate {id} from {} is larger than {MAX_NODE_CERTIFICATE} bytes", self.control));
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("reading certificate {id} from {}: {e}", self.control))?;
            if body.len() + chunk.len() > MAX_NODE_CERTIFICATE {
                return Err(format!(
                    "certificate {id} from {} is larger than {MAX_NODE_CERTIFICATE} bytes",
                    self.control
                ));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(format!(
                "{} answered {status} for certificate {id}: {}",
                self.control,
                text.chars().take(300).collect::<String>()
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("certificate {id} from {}: {e}", self.control))
    }
}

#[async_trait]
impl CertSource for NodeCerts {
    async fn certificate(&self, id: &str) -> Result<(String, String), String> {
        if !chanto_store::node_wire::is_certificate_id(id) {
            return Err(format!("{id:?} is not a certificate id"));
        }
        if let Some(pair) = self.kept(id) {
            return Ok(pair);
        }
        let cert = self.fetch(id).await?;
        let bytes = serde_json::to_vec(&cert).map_err(|e| e.to_string())?;
        let pair = Self::checked(id, cert)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        crate::serve::write_file_atomic(&self.path(id), &bytes, 0o600).map_err(|e| format!("{e:#}"))?;
        Ok(pair)
    }
}
