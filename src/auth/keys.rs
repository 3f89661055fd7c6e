//! Link secrets: one random 32-byte secret per pair of nodes that talk, and the key files that
//! hold them. Each node's file holds only its own links, so a node can never speak for
//! another.
//!
//! A key file is TOML, mode 0600:
//! ```toml
//! node = 101
//! [links]
//! 1 = "9f3c…"   # 64 hex digits per peer
//! ```

use crate::proto::NodeId;
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;

pub const SECRET_BYTES: usize = 32;

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: readable by others (mode {mode:o}); run: chmod 600 {path}")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path}: no key for peer {peer} (run `statesync keygen` again for this config)")]
    MissingPeer { path: PathBuf, peer: NodeId },
    #[error("the system random source failed")]
    Random,
}

/// The link secrets of one node.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkKeys {
    node: NodeId,
    links: BTreeMap<NodeId, [u8; SECRET_BYTES]>,
}

impl std::fmt::Debug for LinkKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        f.debug_struct("LinkKeys")
            .field("node", &self.node)
            .field("peers", &self.links.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    node: NodeId,
    links: BTreeMap<String, String>,
}

impl LinkKeys {
    pub fn node(&self) -> NodeId {
        self.node
    }

    pub fn links(&self) -> impl Iterator<Item = (NodeId, &[u8; SECRET_BYTES])> {
        self.links.iter().map(|(&id, k)| (id, k))
    }

    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.links.keys().copied()
    }

    /// Keys from given secrets (tests and fuzzing; real keys come from [`LinkKeys::generate`]).
    pub fn from_secrets(
        node: NodeId,
        links: impl IntoIterator<Item = (NodeId, [u8; SECRET_BYTES])>,
    ) -> LinkKeys {
        LinkKeys {
            node,
            links: links.into_iter().collect(),
        }
    }

    /// Fresh random secrets for every pair in `links` (each pair once, either order): one
    /// `LinkKeys` per node named in them, sorted by node ID.
    pub fn generate(links: &[(NodeId, NodeId)]) -> Result<Vec<LinkKeys>, KeyError> {
        let rng = SystemRandom::new();
        let mut by_node: BTreeMap<NodeId, LinkKeys> = BTreeMap::new();
        for &(a, b) in links {
            if a == b || by_node.get(&a).is_some_and(|k| k.links.contains_key(&b)) {
                continue;
            }
            let mut secret = [0u8; SECRET_BYTES];
            rng.fill(&mut secret).map_err(|_| KeyError::Random)?;
            for (x, y) in [(a, b), (b, a)] {
                by_node
                    .entry(x)
                    .or_insert_with(|| LinkKeys {
                        node: x,
                        links: BTreeMap::new(),
                    })
                    .links
                    .insert(y, secret);
            }
        }
        Ok(by_node.into_values().collect())
    }

    /// The file of node `node` in `dir`.
    pub fn path_in(dir: &Path, node: NodeId) -> PathBuf {
        dir.join(format!("node-{node}.key"))
    }

    /// Writes the key file (mode 0600, through a temporary file renamed into place).
    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        let file = KeyFile {
            node: self.node,
            links: self
                .links
                .iter()
                .map(|(id, k)| (id.to_string(), hex(k)))
                .collect(),
        };
        let text = format!(
            "# statesync link keys of node {}: secret, keep mode 0600\n{}",
            self.node,
            toml::to_string(&file).map_err(|e| KeyError::Invalid {
                path: path.to_owned(),
                message: e.to_string(),
            })?
        );
        let tmp = path.with_extension("key.tmp");
        let err = |source| KeyError::Write {
            path: path.to_owned(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)?;
        Ok(())
    }

    /// Reads a key file; refuses one that others can read, or that is not for `node`.
    pub fn load(path: &Path, node: NodeId) -> Result<LinkKeys, KeyError> {
        let read = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let invalid = |message: String| KeyError::Invalid {
            path: path.to_owned(),
            message,
        };
        let file: KeyFile = toml::from_str(&text).map_err(|e| invalid(e.message().to_owned()))?;
        if file.node != node {
            return Err(invalid(format!(
                "node: the file is for node {}, not {node}",
                file.node
            )));
        }
        let mut links = BTreeMap::new();
        for (peer, key) in &file.links {
            let id: NodeId = peer
                .parse()
                .map_err(|_| invalid(format!("links: {peer:?} is not a node ID")))?;
            let secret = unhex(key).ok_or_else(|| {
                invalid(format!(
                    "links.{peer}: must be {} hex digits",
                    SECRET_BYTES * 2
                ))
            })?;
            links.insert(id, secret);
        }
        Ok(LinkKeys { node, links })
    }

    /// Checks that a key is held for every peer in `peers`.
    pub fn require(
        &self,
        path: &Path,
        peers: impl IntoIterator<Item = NodeId>,
    ) -> Result<(), KeyError> {
        for peer in peers {
            if !self.links.contains_key(&peer) {
                return Err(KeyError::MissingPeer {
                    path: path.to_owned(),
                    peer,
                });
            }
        }
        Ok(())
    }
}

/// A boot nonce for a new life of this node: microseconds since the Unix epoch shifted left
/// 8, plus 8 random bits (two lives never start in one microsecond). A later life has a larger
/// nonce while the clock does not go back by more than the time between the two starts.
pub fn new_boot_nonce() -> u64 {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut r = [0u8; 1];
    // A failed random source leaves the low bits zero; the time part still orders lives.
    let _ = SystemRandom::new().fill(&mut r);
    (now_us << 8) | r[0] as u64
}

fn hex(b: &[u8]) -> String {
    ::hex::encode(b)
}

fn unhex(s: &str) -> Option<[u8; SECRET_BYTES]> {
    let mut out = [0u8; SECRET_BYTES];
    ::hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}
