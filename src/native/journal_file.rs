//! Where a native client that persists its state ([`ClientBuilder::persist`]) keeps its
//! journal: one file, appended to batch by batch, and replaced through a temporary file and a
//! rename when the core rewrites it, so that a process killed at any point leaves either the
//! old journal or the new one, never a mix.
//!
//! The writes are not `fsync`ed: what was written survives the process being killed (the
//! kernel has it), not the machine losing power before the kernel flushed it.
//!
//! [`ClientBuilder::persist`]: super::ClientBuilder::persist

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::client::Save;

/// The open journal of one client.
#[derive(Debug)]
pub(crate) struct JournalFile {
    path: PathBuf,
    file: File,
}

impl JournalFile {
    /// Opens (creating it if needed) the journal at `path` and reads what it holds. Bytes that
    /// are not UTF-8 can only be a torn last write, which replay ignores.
    pub(crate) fn open(path: &Path) -> io::Result<(JournalFile, String)> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let text = String::from_utf8_lossy(&fs::read(path)?).into_owned();
        let journal = JournalFile {
            path: path.to_owned(),
            file,
        };
        Ok((journal, text))
    }

    /// Moves an unreadable journal out of the way (next to it, `.damaged` added to its name),
    /// for someone to look at, and starts an empty one.
    pub(crate) fn set_aside(&mut self) -> io::Result<PathBuf> {
        let mut aside = self.path.clone().into_os_string();
        aside.push(".damaged");
        let aside = PathBuf::from(aside);
        fs::rename(&self.path, &aside)?;
        self.file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)?;
        Ok(aside)
    }

    /// Stores one batch.
    pub(crate) fn write(&mut self, save: &Save) -> io::Result<()> {
        if !save.rewrite {
            return self.file.write_all(save.text.as_bytes());
        }
        let mut temporary = self.path.clone().into_os_string();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        fs::write(&temporary, save.text.as_bytes())?;
        fs::rename(&temporary, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        Ok(())
    }
}
