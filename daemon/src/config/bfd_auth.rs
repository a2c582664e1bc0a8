//! A BFD session's authentication (RFC 5880 §6.7), as petreld.toml, the
//! datastore's peer records and the cluster's BGP configuration (for the
//! node mesh) write it:
//!
//! ```toml
//! bfd = { auth = { type = "meticulous-keyed-sha1", key_id = 1, secret_file = "/etc/petrel/bfd.key" } }
//! ```
//!
//! The secret lives in a file of its own, read on the node when the peer is
//! configured (at start, on SIGHUP for petreld.toml's peers, and whenever
//! the datastore's records are resolved again), so a record in etcd names a
//! path, never a key.
//! One trailing newline is not part of the key (`echo secret > file`).
//! Keyed MD5 is not offered (see `petrel_bgp::bfd::auth`), nor the simple
//! password, which travels in the clear (§6.7.2).

use petrel_bgp::bfd::{AuthKey, AuthKind};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// bfd.AuthType (§6.8.1) as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BfdAuthType {
    /// §6.7.4 keyed SHA1: the sequence number may repeat.
    KeyedSha1,
    /// §6.7.4 meticulous keyed SHA1: every packet a new sequence number.
    MeticulousKeyedSha1,
}

impl BfdAuthType {
    pub fn kind(self) -> AuthKind {
        match self {
            BfdAuthType::KeyedSha1 => AuthKind::KeyedSha1,
            BfdAuthType::MeticulousKeyedSha1 => AuthKind::MeticulousKeyedSha1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BfdAuthType::KeyedSha1 => "keyed-sha1",
            BfdAuthType::MeticulousKeyedSha1 => "meticulous-keyed-sha1",
        }
    }
}

impl std::str::FromStr for BfdAuthType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "keyed-sha1" => Ok(BfdAuthType::KeyedSha1),
            "meticulous-keyed-sha1" => Ok(BfdAuthType::MeticulousKeyedSha1),
            _ => Err(format!(
                "{s:?}: expected \"keyed-sha1\" or \"meticulous-keyed-sha1\""
            )),
        }
    }
}

/// `bfd.auth`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfdAuth {
    #[serde(rename = "type")]
    pub kind: BfdAuthType,
    /// Auth Key ID (§4.4), which both ends must agree on.
    pub key_id: u8,
    /// The file holding the shared key, 1 to 20 octets (§4.4); the key
    /// itself is never part of a record.
    pub secret_file: PathBuf,
}

impl BfdAuth {
    /// What can be checked without the file, where the record is written
    /// (petrelctl) as on the node. A relative path would depend on
    /// petreld's working directory.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.secret_file.is_absolute() {
            return Err((
                "auth.secret_file",
                format!("{}: must be an absolute path", self.secret_file.display()),
            ));
        }
        Ok(())
    }

    /// Reads the key from `secret_file`. The error is `(field, message)`,
    /// the field relative to `bfd`.
    pub fn load(&self) -> Result<AuthKey, (&'static str, String)> {
        self.validate()?;
        let path = &self.secret_file;
        let mut secret = std::fs::read(path).map_err(|e| {
            (
                "auth.secret_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        if secret.ends_with(b"\n") {
            secret.pop();
            if secret.ends_with(b"\r") {
                secret.pop();
            }
        }
        AuthKey::new(self.kind.kind(), self.key_id, secret)
            .map_err(|e| ("auth.secret_file", format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(file: PathBuf) -> BfdAuth {
        BfdAuth {
            kind: BfdAuthType::MeticulousKeyedSha1,
            key_id: 7,
            secret_file: file,
        }
    }

    #[test]
    fn the_key_is_the_file_without_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, "s3cret\n").unwrap();
        let a = auth(f);
        let k = a.load().unwrap();
        assert_eq!(
            (k.kind, k.key_id, k.secret.as_slice()),
            (AuthKind::MeticulousKeyedSha1, 7, &b"s3cret"[..])
        );
        // The record written back names the file, never the key.
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("s3cret"), "{json}");
        assert!(json.contains(r#""type":"meticulous-keyed-sha1""#), "{json}");
    }

    #[test]
    fn a_missing_empty_or_long_secret_names_the_field_and_the_file() {
        let (field, m) = auth(PathBuf::from("bfd.key")).load().unwrap_err();
        assert_eq!(field, "auth.secret_file");
        assert!(m.contains("absolute"), "{m}");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none");
        let (field, m) = auth(missing.clone()).load().unwrap_err();
        assert_eq!(field, "auth.secret_file");
        assert!(m.contains(&missing.display().to_string()), "{m}");
        for (name, body) in [("empty", "\n"), ("long", "123456789012345678901")] {
            let f = dir.path().join(name);
            std::fs::write(&f, body).unwrap();
            let (field, m) = auth(f.clone()).load().unwrap_err();
            assert_eq!(field, "auth.secret_file");
            assert!(
                m.contains(&f.display().to_string()) && m.contains("1 to 20 octets"),
                "{m}"
            );
        }
    }
}
