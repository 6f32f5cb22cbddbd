//! Files that readers must never see half-written (the `--report` JSON):
//! written to a temporary file in the same directory, then renamed over the
//! target in one step (`tempfile`'s `persist`).

use std::io::{BufWriter, Write};
use std::path::Path;

/// Write `path` atomically with `fill`, which gets a buffered writer.
pub fn write(
    path: &Path,
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
    tmp.persist(path).map_err(|e| e.error)?;
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
    }
}
