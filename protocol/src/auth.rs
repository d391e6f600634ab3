//! Per-agent keys and the frame MAC.
//!
//! Enrollment: the aggregator holds one *master key* (32 random bytes, in a root-only file).
//! Each node's key is derived from it and bound to the node's role:
//! `HMAC-SHA256(master, "yunjian/node-key/v2/" + ("host/" | "guest/") + node_id)`.
//! `yunjian-aggregator enroll --role host|guest <node-id>` writes that node key to a file for the
//! agent; the agent never sees the master key, so it can sign only as itself, and only in the
//! role it was enrolled with: a VM's key is not a hypervisor's key, so a VM cannot speak for
//! other VMs (claim them in a guest list) however its agent is configured. The aggregator finds
//! a node's role by which of the two keys verifies its first frame, and caches the key.
//!
//! There is no role-less node key: the v1 derivation (`"yunjian/node-key/v1/" + node_id`) is
//! gone, and keys enrolled with it no longer verify (re-enrol the node with its role).
//!
//! Keys are stored as 64 hex characters. `Debug` output of key types is redacted so a key
//! cannot reach a log line through `{:?}`.

use crate::body::Role;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::path::Path;

/// Length of the truncated HMAC-SHA256 tag appended to every frame.
pub const MAC_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path}: expected 64 hex characters (32 bytes), found {found} characters")]
    BadLength { path: String, found: usize },
    #[error("key file {path}: not hexadecimal")]
    NotHex { path: String },
    #[error("could not read random bytes from the OS: {0}")]
    Random(std::io::Error),
}

/// A node's signing key (32 bytes), with the HMAC key schedule prepared once so that signing
/// and verifying a frame costs only the hashing of the frame itself.
#[derive(Clone)]
pub struct NodeKey {
    bytes: [u8; 32],
    prepared: HmacSha256,
}

impl PartialEq for NodeKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for NodeKey {}

/// The aggregator's master key from which node keys are derived (32 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKey(<redacted>)")
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

fn to_hex(bytes: &[u8; 32]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

fn from_hex(text: &str, path: &str) -> Result<[u8; 32], KeyError> {
    let t = text.trim();
    if t.len() != 64 {
        return Err(KeyError::BadLength {
            path: path.to_string(),
            found: t.len(),
        });
    }
    let mut out = [0u8; 32];
    let raw = t.as_bytes();
    for (i, o) in out.iter_mut().enumerate() {
        let hi = (raw[2 * i] as char).to_digit(16);
        let lo = (raw[2 * i + 1] as char).to_digit(16);
        match (hi, lo) {
            (Some(h), Some(l)) => *o = (h * 16 + l) as u8,
            _ => {
                return Err(KeyError::NotHex {
                    path: path.to_string(),
                })
            }
        }
    }
    Ok(out)
}

fn read_key_file(path: &Path) -> Result<[u8; 32], KeyError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: p.clone(),
        source,
    })?;
    from_hex(&text, &p)
}

fn write_key_file(path: &Path, bytes: &[u8; 32]) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let p = path.display().to_string();
    let io = |source| KeyError::Io {
        path: p.clone(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(to_hex(bytes).as_bytes()).map_err(io)?;
    f.write_all(b"\n").map_err(io)
}

impl NodeKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        NodeKey {
            bytes,
            prepared: <HmacSha256 as Mac>::new_from_slice(&bytes).expect("HMAC takes any key size"),
        }
    }
    /// Parse 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        from_hex(text, "<inline>").map(NodeKey::from_bytes)
    }
    pub fn to_hex(&self) -> String {
        to_hex(&self.bytes)
    }
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        read_key_file(path).map(NodeKey::from_bytes)
    }
    /// Write the key as hex to a file created with mode 0600.
    pub fn write_file(&self, path: &Path) -> Result<(), KeyError> {
        write_key_file(path, &self.bytes)
    }

    /// The truncated HMAC-SHA256 of `data`.
    pub fn mac(&self, data: &[u8]) -> [u8; MAC_LEN] {
        let mut m = self.prepared.clone();
        m.update(data);
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// The MQTT password of this node for brokers that check it (the embedded broker does):
    /// a MAC over a fixed label, so the broker can verify it from the master key and the
    /// node id, and the key itself never travels.
    pub fn mqtt_password(&self) -> String {
        let tag = self.mac(b"yunjian/mqtt-login/v1");
        let mut s = String::with_capacity(2 * MAC_LEN);
        for b in tag {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Constant-time check of a truncated MAC.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        if tag.len() != MAC_LEN {
            return false;
        }
        let mut m = self.prepared.clone();
        m.update(data);
        m.verify_truncated_left(tag).is_ok()
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }
    /// A fresh random master key from the OS (`/dev/urandom`).
    pub fn generate() -> Result<Self, KeyError> {
        use std::io::Read;
        let mut b = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(KeyError::Random)?;
        Ok(MasterKey(b))
    }
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        from_hex(text, "<inline>").map(MasterKey)
    }
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        read_key_file(path).map(MasterKey)
    }
    pub fn write_file(&self, path: &Path) -> Result<(), KeyError> {
        write_key_file(path, &self.0)
    }
    /// Read the master key at `path`, or create one (mode 0600) if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        if path.exists() {
            Self::read_file(path)
        } else {
            let k = Self::generate()?;
            k.write_file(path)?;
            Ok(k)
        }
    }
    /// The key of `node` enrolled as `role`. The role is part of the derivation, so the key
    /// of a guest and the key of a host of the same node id are unrelated.
    pub fn node_key(&self, node: &str, role: Role) -> NodeKey {
        let domain: &[u8] = match role {
            Role::Host => b"yunjian/node-key/v2/host/",
            Role::Guest => b"yunjian/node-key/v2/guest/",
        };
        self.derive(&[domain, node.as_bytes()])
    }

    /// The key that signs the audit chain's checkpoints. Its derivation input is the one the
    /// role-less v1 node keys used for the name `audit/checkpoint` (not a valid node id), so
    /// checkpoints signed before node keys were bound to roles still verify.
    pub fn checkpoint_key(&self) -> NodeKey {
        self.derive(&[b"yunjian/node-key/v1/", b"audit/checkpoint"])
    }

    fn derive(&self, parts: &[&[u8]]) -> NodeKey {
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.0).expect("HMAC takes any key size");
        for p in parts {
            m.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(&m.finalize().into_bytes());
        NodeKey::from_bytes(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_key_material() {
        let k = NodeKey::from_bytes([0xab; 32]);
        let m = MasterKey::from_bytes([0xcd; 32]);
        assert_eq!(format!("{k:?}"), "NodeKey(<redacted>)");
        assert!(!format!("{m:?}").contains("cd"));
    }

    #[test]
    fn derived_keys_differ_per_node_and_roundtrip_hex() {
        let m = MasterKey::from_bytes([7; 32]);
        let a = m.node_key("host-a", Role::Host);
        let b = m.node_key("host-b", Role::Host);
        assert_ne!(a, b);
        assert_eq!(NodeKey::from_hex(&a.to_hex()).unwrap(), a);
    }

    #[test]
    fn a_guest_key_is_not_a_host_key() {
        let m = MasterKey::from_bytes([7; 32]);
        let guest = m.node_key("vm-01", Role::Guest);
        let tag = guest.mac(b"frame");
        assert!(!m.node_key("vm-01", Role::Host).verify(b"frame", &tag));
        assert!(!m.node_key("vm-02", Role::Guest).verify(b"frame", &tag));
        assert!(guest.verify(b"frame", &tag));
        assert_ne!(m.checkpoint_key(), m.node_key("audit", Role::Host));
    }

    #[test]
    fn derivations_are_pinned() {
        // an accidental change of the derivation would invalidate every enrolled key; the
        // checkpoint key is HMAC(master, "yunjian/node-key/v1/audit/checkpoint") as before
        let m = MasterKey::from_bytes([0x42; 32]);
        let h = m.node_key("h1", Role::Host).to_hex();
        let g = m.node_key("h1", Role::Guest).to_hex();
        let c = m.checkpoint_key().to_hex();
        assert_eq!(
            [&h[..16], &g[..16], &c[..16]],
            ["fadfbb2fbefc2e8f", "2a82480b8bdd984a", "d1922578fa14a80e"]
        );
    }

    #[test]
    fn bad_key_text_is_named() {
        assert!(matches!(
            NodeKey::from_hex("abc"),
            Err(KeyError::BadLength { found: 3, .. })
        ));
        let zz = "z".repeat(64);
        assert!(matches!(
            NodeKey::from_hex(&zz),
            Err(KeyError::NotHex { .. })
        ));
    }

    #[test]
    fn key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("yj-key-{}", std::process::id()));
        let p = dir.join("node.key");
        let k = MasterKey::from_bytes([1; 32]).node_key("n", Role::Guest);
        k.write_file(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(NodeKey::read_file(&p).unwrap(), k);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn mac_verifies_and_rejects_tampering() {
        let k = NodeKey::from_bytes([3; 32]);
        let tag = k.mac(b"hello");
        assert!(k.verify(b"hello", &tag));
        assert!(!k.verify(b"hellp", &tag));
        assert!(!k.verify(b"hello", &tag[..8]));
        assert!(!NodeKey::from_bytes([4; 32]).verify(b"hello", &tag));
    }
}
