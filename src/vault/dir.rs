//! A directory of sealed keys: `ROOT/NAME/FINGERPRINT.json` and `ROOT/NAME/active`.
//! Files are written atomically (temporary file, fsync, rename) with mode 0600.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::seal::SealedKey;
use super::{KeyName, SealedStore, VaultError};

/// Sealed keys under a local directory.
#[derive(Debug)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: PathBuf) -> Self {
        DirStore { root }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VaultError + '_ {
        move |source| VaultError::Io { path: path.to_owned(), source }
    }

    fn key_dir(&self, name: &KeyName) -> PathBuf {
        self.root.join(name.as_str())
    }

    fn ensure_root(&self) -> Result<(), VaultError> {
        if self.root.is_dir() {
            return Ok(());
        }
        if self.root.exists() {
            return Err(VaultError::Config(format!("vault {} is not a directory", self.root.display())));
        }
        Err(VaultError::Config(format!(
            "vault directory {} does not exist (create it, or generate a key first)",
            self.root.display()
        )))
    }

    fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), VaultError> {
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).map_err(Self::io(dir))?;
        tmp.write_all(bytes).map_err(Self::io(dir))?;
        tmp.as_file().sync_all().map_err(Self::io(dir))?;
        let dest = dir.join(name);
        tmp.persist(&dest).map_err(|e| VaultError::Io { path: dest.clone(), source: e.error })?;
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(Self::io(dir))
    }

    /// Like [`Self::write_atomic`], but never replaces an existing file: the temporary file
    /// is hard-linked to its name, which fails if the name exists (no check-then-rename race).
    fn write_new(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), VaultError> {
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).map_err(Self::io(dir))?;
        tmp.write_all(bytes).map_err(Self::io(dir))?;
        tmp.as_file().sync_all().map_err(Self::io(dir))?;
        let dest = dir.join(name);
        fs::hard_link(tmp.path(), &dest).map_err(|e| VaultError::Io { path: dest.clone(), source: e })?;
        drop(tmp);
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(Self::io(dir))
    }

    fn create_dir_private(path: &Path) -> Result<(), VaultError> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(Self::io(path))
    }
}

impl SealedStore for DirStore {
    fn exists(&self) -> bool {
        self.root.exists()
    }

    fn names(&self) -> Result<Vec<KeyName>, VaultError> {
        self.ensure_root()?;
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(Self::io(&self.root))? {
            let entry = entry.map_err(Self::io(&self.root))?;
            if !entry.path().is_dir() {
                continue;
            }
            if let Some(name) = entry.file_name().to_str().and_then(|n| n.parse::<KeyName>().ok()) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn records(&self, name: &KeyName) -> Result<Vec<SealedKey>, VaultError> {
        let dir = self.key_dir(name);
        if !dir.is_dir() {
            if !self.root.exists() {
                return Ok(Vec::new());
            }
            // Surface an unreadable vault rather than calling every key unknown.
            fs::read_dir(&self.root).map_err(Self::io(&self.root))?;
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(Self::io(&dir))? {
            let path = entry.map_err(Self::io(&dir))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = fs::read(&path).map_err(Self::io(&path))?;
                let rec: SealedKey = serde_json::from_slice(&bytes)
                    .map_err(|e| VaultError::Corrupt(format!("{}: {e}", path.display())))?;
                out.push(rec);
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.fingerprint.cmp(&b.fingerprint)));
        Ok(out)
    }

    fn active(&self, name: &KeyName) -> Result<Option<String>, VaultError> {
        let path = self.key_dir(name).join("active");
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.records(name)?;
                Ok(None)
            }
            Err(e) => Err(VaultError::Io { path, source: e }),
        }
    }

    fn put(&self, record: &SealedKey) -> Result<(), VaultError> {
        let name: KeyName = record.name.parse().map_err(VaultError::Config)?;
        let dir = self.key_dir(&name);
        Self::create_dir_private(&dir)?;
        let file = format!("{}.json", record.fingerprint);
        let json = serde_json::to_vec_pretty(record).map_err(|e| VaultError::Corrupt(e.to_string()))?;
        match Self::write_new(&dir, &file, &json) {
            Err(VaultError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(VaultError::Exists(format!("{name} ({})", record.fingerprint)))
            }
            other => other,
        }
    }

    fn set_active(&self, name: &KeyName, fingerprint: &str) -> Result<(), VaultError> {
        let dir = self.key_dir(name);
        Self::create_dir_private(&dir)?;
        Self::write_atomic(&dir, "active", format!("{fingerprint}\n").as_bytes())
    }

    fn revocation(&self, name: &KeyName, fingerprint: &str) -> Result<Option<String>, VaultError> {
        if fingerprint.is_empty() || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let path = self.key_dir(name).join(format!("{fingerprint}.rev"));
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(VaultError::Io { path, source: e }),
        }
    }

    fn put_revocation(&self, name: &KeyName, fingerprint: &str, armored: &str) -> Result<(), VaultError> {
        let dir = self.key_dir(name);
        Self::write_new(&dir, &format!("{fingerprint}.rev"), armored.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::seal::KekInfo;

    fn record(ciphertext: &str) -> SealedKey {
        SealedKey {
            format: "test".into(),
            name: "k".into(),
            fingerprint: "AB".repeat(20),
            algo: "ed25519".into(),
            created: "2026-01-01T00:00:00Z".into(),
            public_key: String::new(),
            kek: KekInfo::AwsKms { key_id: "test".into() },
            wrapped_dek: String::new(),
            ciphertext: ciphertext.into(),
        }
    }

    #[test]
    fn racing_writers_of_one_record_never_replace_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(DirStore::new(dir.path().to_owned()));
        let results: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || store.put(&record(&format!("writer-{i}"))))
            })
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
        assert!(results.iter().all(|r| matches!(r, Ok(()) | Err(VaultError::Exists(_)))), "{results:?}");
        // The record on disk is the winner's, whole.
        let name: KeyName = "k".parse().unwrap();
        let stored = store.records(&name).unwrap();
        assert_eq!(stored.len(), 1);
        let winner = results.iter().position(|r| r.is_ok()).unwrap();
        assert_eq!(stored[0].ciphertext, format!("writer-{winner}"));
        // And no temporary file is left behind.
        let left: Vec<_> = fs::read_dir(dir.path().join("k")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }
}
