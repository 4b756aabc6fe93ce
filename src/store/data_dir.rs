//! The data dir holds contacts and key digests, so only its owner may read it: the
//! directory is created `0700` and every file in it `0600` (whatever the umask). A dir
//! or file that others can read or enter (an install from before this rule, a restored
//! backup) is tightened at open when this process owns it, and refused otherwise,
//! naming the `chmod` that fixes it — as PostgreSQL refuses a readable data directory.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::path::Path;

use super::StoreError;

/// The file in which the process that opened the data dir for writing records its id,
/// so that a second process refused the data dir can name the holder.
pub(super) const HOLDER_FILE: &str = "contactd.pid";

/// Records this process as the data dir's holder (it has just opened the database).
pub fn record_holder(dir: &Path) -> io::Result<()> {
    use std::io::Write;
    let mut file = private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(HOLDER_FILE))?;
    writeln!(file, "{}", std::process::id())
}

/// Forgets the holder record when it is this process's (it is closing the database).
pub fn forget_holder(dir: &Path) {
    if holder_record(dir) == Some(std::process::id()) {
        let _ = std::fs::remove_file(dir.join(HOLDER_FILE));
    }
}

/// The process that holds the data dir, as it recorded itself, if that process is
/// still running (a record a killed process left names nobody).
pub fn holder(dir: &Path) -> Option<u32> {
    let pid = holder_record(dir)?;
    let alive = !cfg!(target_os = "linux") || Path::new(&format!("/proc/{pid}")).exists();
    alive.then_some(pid)
}

fn holder_record(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join(HOLDER_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The error for a data dir whose database another process holds.
pub fn already_open(dir: &Path) -> StoreError {
    StoreError::AlreadyOpen(dir.to_path_buf(), holder(dir))
}

/// Mode bits that let anyone but the owner in.
#[cfg(unix)]
const OTHERS: u32 = 0o077;

/// Creates `dir` (owner only) if missing, and tightens it and the files in it.
pub fn prepare(dir: &Path) -> Result<(), StoreError> {
    create_private_dir(dir)?;
    tighten(dir, true)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            tighten(&entry.path(), false)?;
        }
    }
    Ok(())
}

/// Creates `dir` and any missing parents, readable by the owner only.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Options that create a file readable and writable by the owner only.
pub fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

#[cfg(unix)]
fn tighten(path: &Path, is_dir: bool) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;

    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & OTHERS == 0 {
        return Ok(());
    }
    let wanted = if is_dir { 0o700 } else { 0o600 };
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted)) {
        Ok(()) => {
            tracing::warn!(
                path = %path.display(),
                from = format!("{:o}", mode & 0o777),
                to = format!("{wanted:o}"),
                "the data dir was readable by other users; tightened its permissions"
            );
            Ok(())
        }
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            Err(StoreError::DataDir(format!(
                "{} is accessible to other users (mode {:o}) and this process cannot change that (it is not the owner); fix it with `chmod {wanted:o} {}` as its owner",
                path.display(),
                mode & 0o777,
                path.display()
            )))
        }
        Err(err) => Err(err.into()),
    }
}

#[cfg(not(unix))]
fn tighten(_path: &Path, _is_dir: bool) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_dir_is_private_and_an_open_one_is_tightened() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.join("contactd.redb");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        prepare(&dir).unwrap();
        assert_eq!((mode(&dir), mode(&file)), (0o700, 0o600));
    }

    #[test]
    fn private_files_are_created_0600() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("f");
        private_file().write(true).create(true).open(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
    }
}
