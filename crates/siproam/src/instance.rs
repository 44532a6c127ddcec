//! The RFC 5626 instance id (`+sip.instance`) kept per address of record
//! in a state directory, so that a restarted agent registers as the same
//! instance and its registrar replaces the old binding instead of adding
//! one.
//!
//! One file per AoR, `instance-HASH` (HASH: the SHA-256 of the AoR as
//! given, in hex — an AoR is personal data and does not appear in clear),
//! holding one `urn:uuid:` line. The directory is created with mode 0700,
//! the file with 0600; a new file is written whole under another name and
//! linked into place, so a reader never sees half a file and two agents
//! starting at once end with the same id. A file that does not hold a
//! `urn:uuid:` is replaced by a new id ([`InstanceOrigin::Replaced`], for
//! the caller to warn about); a file or directory that cannot be read or
//! written is an error.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::random::{self, RandomError};

/// Where the id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceOrigin {
    /// Read from the file written by an earlier run.
    Loaded,
    /// No file yet: a new id, now stored.
    Created,
    /// The file held no valid id: a new one was stored in its place.
    Replaced,
}

/// Why the instance id could not be kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceStoreError {
    /// The state directory could not be created.
    #[error("cannot create the state directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The new file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No randomness for a new id.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// The default state directory: `$XDG_STATE_HOME/siproam`, else
/// `$HOME/.local/state/siproam` (XDG Base Directory); `None` when neither
/// is set to an absolute path.
pub fn default_state_dir() -> Option<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    absolute("XDG_STATE_HOME")
        .or_else(|| absolute("HOME").map(|h| h.join(".local").join("state")))
        .map(|d| d.join("siproam"))
}

/// The file that keeps the instance id of `aor` in `dir`.
pub fn instance_file(dir: &Path, aor: &str) -> PathBuf {
    let mut name = String::from("instance-");
    for b in Sha256::digest(aor.as_bytes()) {
        let _ = write!(name, "{b:02x}");
    }
    dir.join(name)
}

/// The instance id of `aor` kept in `dir` (created when missing), and
/// where it came from.
pub fn stored_instance_id(
    dir: &Path,
    aor: &str,
) -> Result<(String, InstanceOrigin), InstanceStoreError> {
    create_dir(dir).map_err(|source| InstanceStoreError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let path = instance_file(dir, aor);
    let origin = match std::fs::read(&path) {
        Ok(bytes) => match parse(&bytes) {
            Some(urn) => return Ok((urn, InstanceOrigin::Loaded)),
            None => InstanceOrigin::Replaced,
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => InstanceOrigin::Created,
        Err(source) => return Err(InstanceStoreError::Read { path, source }),
    };
    let urn = random::instance_id()?;
    let tmp = dir.join(format!(
        ".{}.{}.{:016x}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id(),
        random::os_u64()?
    ));
    let written = write_new(&tmp, &urn).and_then(|()| match origin {
        // another agent may be creating it too: the first one wins
        InstanceOrigin::Created => std::fs::hard_link(&tmp, &path),
        _ => std::fs::rename(&tmp, &path),
    });
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok((urn, origin)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let bytes = std::fs::read(&path).map_err(|source| InstanceStoreError::Read {
                path: path.clone(),
                source,
            })?;
            match parse(&bytes) {
                Some(theirs) => Ok((theirs, InstanceOrigin::Loaded)),
                None => Err(InstanceStoreError::Write {
                    path,
                    source: io::Error::new(io::ErrorKind::InvalidData, "written meanwhile"),
                }),
            }
        }
        Err(source) => Err(InstanceStoreError::Write { path, source }),
    }
}

fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn write_new(path: &Path, urn: &str) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(format!("{urn}\n").as_bytes())?;
    file.sync_all()
}

/// The `urn:uuid:` a file holds (one line, 8-4-4-4-12 hex digits).
fn parse(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let uuid = text
        .get(..9)
        .filter(|p| p.eq_ignore_ascii_case("urn:uuid:"))
        .and_then(|_| text.get(9..))?;
    let groups: Vec<&str> = uuid.split('-').collect();
    let well_formed = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    well_formed.then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("siproam-instance-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn an_id_is_created_once_per_aor_then_reused() {
        let dir = temp("reuse").join("state");
        let (a, origin) =
            stored_instance_id(&dir, "sip:alice@example.test").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(origin, InstanceOrigin::Created);
        assert!(parse(a.as_bytes()).is_some(), "{a}");
        let again = stored_instance_id(&dir, "sip:alice@example.test").ok();
        assert_eq!(again, Some((a.clone(), InstanceOrigin::Loaded)));
        let (b, _) =
            stored_instance_id(&dir, "sip:bob@example.test").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a, b, "one id per AoR");
        // the AoR is not in any file name; the files are the owner's alone
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(!name.contains("alice") && !name.contains("bob"), "{name}");
            assert!(!name.ends_with(".tmp"), "left behind: {name}");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = entry.metadata().map(|m| m.permissions().mode() & 0o777);
                assert_eq!(mode.ok(), Some(0o600), "{name}");
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dir).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(mode.ok(), Some(0o700));
        }
        let _ = std::fs::remove_dir_all(dir.parent().unwrap_or(&dir));
    }

    #[test]
    fn a_corrupt_file_is_replaced_and_an_unreadable_one_is_an_error() {
        let dir = temp("corrupt");
        let aor = "sip:carol@example.test";
        let _ = create_dir(&dir);
        let path = instance_file(&dir, aor);
        for junk in [
            &b"urn:uuid:not-a-uuid\n"[..],
            b"",
            b"\xff\xfe",
            b"urn:uuid:1234",
        ] {
            let _ = std::fs::write(&path, junk);
            let (id, origin) = stored_instance_id(&dir, aor).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(origin, InstanceOrigin::Replaced);
            assert_eq!(
                std::fs::read_to_string(&path)
                    .ok()
                    .map(|s| s.trim().to_owned()),
                Some(id)
            );
        }
        // a directory where the file should be: cannot be read
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::create_dir(&path);
        assert!(matches!(
            stored_instance_id(&dir, aor),
            Err(InstanceStoreError::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_well_formed_uuid_urns_are_taken() {
        let good = "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
        assert_eq!(parse(format!("{good}\n").as_bytes()).as_deref(), Some(good));
        assert!(parse(b"URN:UUID:F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6").is_some());
        for bad in [
            "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf",
            "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bfg",
            "urn:uuid:f81d4fae7dec-11d0-a765-00a0c91e6bf6",
            "urn:uuid:",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad}");
        }
    }
}
