//! chanto's core: the product's vocabulary (site, branch, deploy, blob, manifest)
//! and the pure rules over it. Nothing here does IO or needs a runtime, so every
//! rule can be tested with a table and reused by the edge, the control plane and
//! the CLI alike.

pub mod access;
pub mod content;
pub mod domain;
pub mod error;
pub mod hash;
pub mod host;
pub mod manifest;
pub mod names;
pub mod path;
pub mod request_path;
pub mod state;

pub use access::{AccessPolicy, AccessScope, AccessUser};
pub use domain::DomainName;
pub use error::ValidationError;
pub use hash::ContentHash;
pub use host::{HostRoute, is_known_public_suffix, normalize_origin, parse_host, route_host};
pub use manifest::{Encoding, Manifest, ManifestEntry, UrlStyle, Variant};
pub use names::{BranchName, BuildId, DeployId, SiteName};
pub use path::{MAX_PATH_BYTES, normalize_manifest_path};
pub use state::{BuildState, DeployState};
