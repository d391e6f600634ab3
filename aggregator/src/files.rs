//! Files only the aggregator's own user may read. The data directory holds the master key and
//! the database, whose register names contacts with their phone numbers and e-mail: it is
//! created `0700`, and one found looser is tightened with a warning. The files in it are
//! created `0600` by whoever writes them (the master key by `yunjian-protocol`, the SQLite
//! database and its `-wal`, `-shm` and `-journal` files by `yunjian-store-sqlite`), so nothing
//! depends on the process's umask, which this crate leaves alone.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The mode of the data directory.
pub const DIR_MODE: u32 = 0o700;

/// Create `dir` (and any missing parent) with mode `0700`; an existing `dir` that group or
/// others may enter is tightened to `0700`, with a warning naming what it was.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
        tracing::warn!(
            dir = %dir.display(),
            was = %format!("{mode:04o}"),
            "the data directory was open to other users; tightened to 0700"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_directory_is_0700_and_a_loose_one_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let new = tmp.path().join("a/b/data");
        private_dir(&new).unwrap();
        assert_eq!(mode(&new), 0o700);
        let loose = tmp.path().join("loose");
        std::fs::create_dir(&loose).unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&loose).unwrap();
        assert_eq!(mode(&loose), 0o700);
        // a stricter one is left as it is
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o500)).unwrap();
        private_dir(&loose).unwrap();
        assert_eq!(mode(&loose), 0o500);
    }
}
