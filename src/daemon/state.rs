//! The epoch state file (issue 10 item 6): a control unit persists the highest epoch it has
//! seen before it transmits anything of that epoch, and a restarted unit reads it back, so it
//! never goes back to an epoch at or below one an earlier life may have announced.
//!
//! One file per control unit, `<[state] dir>/<id>.epoch`, holding the epoch as a decimal
//! number and a newline. It is replaced atomically: write `<id>.epoch.tmp`, fsync it, rename it
//! over `<id>.epoch`, fsync the directory (so the rename itself survives a power loss). A crash
//! at any point leaves either the old or the new file. A file that exists but does not hold an
//! epoch is an error naming the path: the unit refuses to start rather than forget.
//!
//! Next to it, every node (control unit or client) keeps `<id>.started`, the marker of an
//! earlier life (issue 12 item 1): written the same way, once, just before the node's first
//! life transmits anything. `statesync node` starts a node with a marker (or an epoch file) as
//! a restarted one.

use crate::proto::{ControlUnit, NodeId};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Longest state file read back: an epoch is at most 20 digits; anything much longer is not
/// ours, and is refused without being read whole.
const MAX_FILE_BYTES: u64 = 64;

/// Why the state file could not be used. Every message names the path.
#[derive(Debug, Error)]
pub enum StateError {
    #[error("state file {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The file exists but does not hold an epoch this unit can take. Refusing is the only
    /// safe answer: starting without it could reuse an epoch an earlier life announced.
    #[error(
        "state file {path}: {why}; refusing to start (fix or remove it only if you know this unit's highest epoch)"
    )]
    Corrupt { path: PathBuf, why: String },
}

/// The highest epoch a control unit has on disk, and where.
#[derive(Debug)]
pub struct EpochFile {
    path: PathBuf,
    tmp: PathBuf,
    dir: PathBuf,
    persisted: u64,
}

impl EpochFile {
    /// Opens (creating the directory if needed) the state file of unit `id` in `dir` and reads
    /// the epoch it holds; a missing file is a unit that never persisted one (epoch 0).
    pub fn open(dir: &Path, id: NodeId) -> Result<EpochFile, StateError> {
        let path = dir.join(format!("{id}.epoch"));
        let tmp = dir.join(format!("{id}.epoch.tmp"));
        fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_owned(),
            what: "cannot create the state directory",
            source,
        })?;
        let persisted = read_epoch(&path)?;
        Ok(EpochFile {
            path,
            tmp,
            dir: dir.to_owned(),
            persisted,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The epoch on disk (0: none yet).
    pub fn persisted(&self) -> u64 {
        self.persisted
    }

    /// Makes `epoch` durable if it is above what is on disk: write the temporary file, fsync,
    /// rename over the state file, fsync the directory. Returns whether it wrote.
    pub fn store(&mut self, epoch: u64) -> Result<bool, StateError> {
        if epoch <= self.persisted {
            return Ok(false);
        }
        replace_atomically(
            &self.dir,
            &self.tmp,
            &self.path,
            format!("{epoch}\n").as_bytes(),
        )?;
        self.persisted = epoch;
        Ok(true)
    }

    /// Persists `cu`'s highest epoch if it rose since the last call. The daemon calls this
    /// after every step that may raise it and before transmitting; returns the epoch written.
    pub fn sync(&mut self, cu: &ControlUnit) -> Result<Option<u64>, StateError> {
        let h = cu.highest_epoch();
        Ok(self.store(h)?.then_some(h))
    }
}

/// Replaces `path` (in `dir`) with `contents` so that a crash at any point leaves either the
/// old file or the new one: write `tmp`, fsync it, rename it over `path`, fsync `dir` (so the
/// rename itself survives a power loss). The one writer of every state file.
fn replace_atomically(
    dir: &Path,
    tmp: &Path,
    path: &Path,
    contents: &[u8],
) -> Result<(), StateError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| StateError::Io { path, what, source }
    };
    let mut f = File::create(tmp).map_err(io("cannot create", tmp))?;
    f.write_all(contents).map_err(io("cannot write", tmp))?;
    f.sync_all().map_err(io("cannot fsync", tmp))?;
    drop(f);
    fs::rename(tmp, path).map_err(io("cannot rename into place", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("cannot fsync the state directory", dir))?;
    Ok(())
}

/// The marker that says node `id` has run before (issue 12 item 1): `<dir>/<id>.started`.
/// Written once, atomically, when a node's first life is about to transmit; `statesync node`
/// reads it to tell a first start from a restart. It holds a line for people (when, as what);
/// only its existence counts.
pub fn started_marker(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("{id}.started"))
}

/// Whether node `id` has run before with `dir` as its state directory: its
/// [`started_marker`] exists, or its epoch file does (a control unit started by the older
/// `primary`/`standby` commands, which persisted its epoch but wrote no marker). A directory
/// that cannot be looked into is an error naming it, never "no earlier life".
pub fn ran_before(dir: &Path, id: NodeId) -> Result<bool, StateError> {
    Ok(exists(&started_marker(dir, id))? || exists(&dir.join(format!("{id}.epoch")))?)
}

fn exists(path: &Path) -> Result<bool, StateError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(StateError::Io {
            path: path.to_owned(),
            what: "cannot tell whether this node ran before",
            source,
        }),
    }
}

/// Records that node `id` runs (its [`started_marker`], holding `line` and a newline) unless
/// an earlier life already did; creates `dir` if needed. Returns the marker's path if it wrote
/// it.
pub fn mark_started(dir: &Path, id: NodeId, line: &str) -> Result<Option<PathBuf>, StateError> {
    let path = started_marker(dir, id);
    if exists(&path)? {
        return Ok(None);
    }
    fs::create_dir_all(dir).map_err(|source| StateError::Io {
        path: dir.to_owned(),
        what: "cannot create the state directory",
        source,
    })?;
    let tmp = dir.join(format!("{id}.started.tmp"));
    replace_atomically(dir, &tmp, &path, format!("{line}\n").as_bytes())?;
    Ok(Some(path))
}

/// The epoch in the state file at `path`; 0 if there is no file.
fn read_epoch(path: &Path) -> Result<u64, StateError> {
    let io = |what: &'static str| {
        let path = path.to_owned();
        move |source| StateError::Io { path, what, source }
    };
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("cannot open")(e)),
    };
    let mut text = String::new();
    let corrupt = |why: String| StateError::Corrupt {
        path: path.to_owned(),
        why,
    };
    let n = io::Read::read_to_string(&mut io::Read::take(f, MAX_FILE_BYTES + 1), &mut text)
        .map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => corrupt("not text".into()),
            _ => io("cannot read")(e),
        })?;
    if n as u64 > MAX_FILE_BYTES {
        return Err(corrupt(format!(
            "longer than {MAX_FILE_BYTES} bytes, not an epoch"
        )));
    }
    let digits = text.strip_suffix('\n').unwrap_or(&text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(corrupt(format!(
            "expected an epoch (a decimal number and a newline), found {text:?}"
        )));
    }
    digits
        .parse::<u64>()
        .map_err(|e| corrupt(format!("epoch {digits:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ss-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn stores_reads_back_and_never_goes_down() {
        let dir = tmpdir("roundtrip").join("nested");
        let mut f = EpochFile::open(&dir, 7).unwrap();
        assert_eq!(f.persisted(), 0);
        assert!(f.store(256).unwrap());
        assert!(f.store(0x301).unwrap());
        assert!(!f.store(0x300).unwrap(), "lower: not written");
        assert_eq!(fs::read_to_string(f.path()).unwrap(), "769\n");
        assert!(!dir.join("7.epoch.tmp").exists());
        let f = EpochFile::open(&dir, 7).unwrap();
        assert_eq!(f.persisted(), 0x301);
        let _ = fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn the_started_marker_is_written_once_and_an_epoch_file_counts_too() {
        let dir = tmpdir("marker").join("nested");
        assert!(
            !ran_before(&dir, 4).unwrap(),
            "no directory: no earlier life"
        );
        let path = mark_started(&dir, 4, "first").unwrap().expect("written");
        assert_eq!(path, started_marker(&dir, 4));
        assert_eq!(fs::read_to_string(&path).unwrap(), "first\n");
        assert!(!dir.join("4.started.tmp").exists());
        assert!(ran_before(&dir, 4).unwrap());
        assert_eq!(mark_started(&dir, 4, "second").unwrap(), None);
        assert_eq!(fs::read_to_string(&path).unwrap(), "first\n", "kept");
        // Another node of the same directory has its own marker.
        assert!(!ran_before(&dir, 5).unwrap());
        // A unit of the older commands left only its epoch file.
        EpochFile::open(&dir, 5).unwrap().store(256).unwrap();
        assert!(ran_before(&dir, 5).unwrap());
        // A leftover temporary file (a crash mid-write) is no earlier life.
        fs::write(dir.join("6.started.tmp"), "torn").unwrap();
        assert!(!ran_before(&dir, 6).unwrap());
        assert!(mark_started(&dir, 6, "six").unwrap().is_some());
        let _ = fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn corrupt_files_are_refused_naming_the_path() {
        let dir = tmpdir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("3.epoch");
        for bad in [
            &b""[..],
            b"\n",
            b"12x\n",
            b"-5\n",
            b" 5\n",
            b"99999999999999999999999\n",
            b"\xff\xfe\n",
            &[b'1'; 100],
        ] {
            fs::write(&path, bad).unwrap();
            let e = EpochFile::open(&dir, 3).unwrap_err();
            assert!(matches!(e, StateError::Corrupt { .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
        // A leftover temporary file from a crash mid-write is ignored and replaced.
        fs::write(&path, "513").unwrap();
        fs::write(dir.join("3.epoch.tmp"), "garbage").unwrap();
        let mut f = EpochFile::open(&dir, 3).unwrap();
        assert_eq!(f.persisted(), 513);
        assert!(f.store(514).unwrap());
        let _ = fs::remove_dir_all(&dir);
    }
}
