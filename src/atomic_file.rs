//! Files that readers must never see half-written (the `--report` JSON, the
//! `--metrics-textfile`): written to a temporary file in the same directory,
//! fsynced, then renamed over the target in one step (`tempfile`'s
//! `persist`), and the directory fsynced: after a crash the file is the old
//! one or the new one, never empty or partial.

use std::io::{BufWriter, Write};
use std::path::Path;

/// Write `path` atomically with `fill`, which gets a buffered writer. The
/// file is readable by its owner only (a temporary file's mode).
pub fn write(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&mut tempfile::NamedTempFile>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    write_with_mode(path, None, fill)
}

/// [`write`], and readable by everyone (mode 0644): a metrics file that
/// node_exporter, running as another user, reads.
pub fn write_readable(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&mut tempfile::NamedTempFile>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    write_with_mode(path, Some(0o644), fill)
}

fn write_with_mode(
    path: &Path,
    mode: Option<u32>,
    fill: impl FnOnce(&mut BufWriter<&mut tempfile::NamedTempFile>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".keep-rsync-")
        .tempfile_in(dir)?;
    {
        let mut w = BufWriter::new(&mut tmp);
        fill(&mut w)?;
        w.flush()?;
    }
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    // The data first: a rename that reaches the disk before the data would
    // leave an empty file under the name after a crash.
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // Then the rename itself.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        std::fs::write(&p, "old").unwrap();
        super::write(&p, |w| std::io::Write::write_all(w, b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        let e = super::write(&p, |_| Err(std::io::Error::other("boom")));
        assert!(e.is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        super::write_readable(&p, |w| std::io::Write::write_all(w, b"m 1\n")).unwrap();
        assert_eq!(mode(&p), 0o644);
    }
}
