//! The edge's HTTPS listener (`chanto serve --https ADDR`): certificates
//! come from the metadata store, their keys opened with the control plane's
//! sealing key, and are served by SNI.

use std::sync::Arc;

use async_trait::async_trait;
use chanto_control::domains::DomainService;
use chanto_edge::certs::{CertSource, EdgeCerts};
use chanto_edge::tls::CertStore;
use chanto_store::MetaStore;

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
