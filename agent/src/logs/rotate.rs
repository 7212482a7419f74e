//! Task output files with a cap: `output.log` takes records until the next would pass
//! `max_size`, then it becomes `output.log.1` (older ones shift up, the oldest past
//! `max_files` is dropped), as Docker's json-file driver does with `max-size`/`max-file`.
//! Without a cap one chatty task could fill the disk under the raft log.

pub use shoal_api::logs::Limits;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `output.log.N`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The files a task's output is in now, oldest first.
pub fn files_oldest_first(path: &Path) -> Vec<PathBuf> {
    let mut older: Vec<PathBuf> = (1..)
        .map(|n| rotated(path, n))
        .take_while(|p| p.exists())
        .collect();
    older.reverse();
    older.push(path.to_path_buf());
    older
}

pub struct RotatingLog {
    path: PathBuf,
    limits: Limits,
    file: File,
    size: u64,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    // Task output can hold anything a task prints, secrets included: owner only.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl RotatingLog {
    pub fn open(path: &Path, limits: Limits) -> std::io::Result<RotatingLog> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            limits,
            file,
            size,
        })
    }

    /// Writes whole records (never split across files).
    pub fn write(&mut self, records: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + records.len() as u64 > self.limits.max_size {
            self.rotate()?;
        }
        self.file.write_all(records)?;
        self.size += records.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.limits.max_files <= 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(rotated(&self.path, self.limits.max_files - 1));
        for n in (1..self.limits.max_files - 1).rev() {
            let from = rotated(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_cap_moves_to_numbered_files_and_the_oldest_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("output.log");
        let limits = Limits {
            max_size: 10,
            max_files: 3,
        };
        let mut log = RotatingLog::open(&path, limits).unwrap();
        for rec in [
            "aaaa\n", "bbbb\n", "cccc\n", "dddd\n", "eeee\n", "ffff\n", "gggg\n",
        ] {
            log.write(rec.as_bytes()).unwrap();
        }
        let files = files_oldest_first(&path);
        let text: Vec<String> = files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        assert_eq!(text, ["cccc\ndddd\n", "eeee\nffff\n", "gggg\n"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn one_file_is_emptied_instead_of_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("output.log");
        let mut log = RotatingLog::open(
            &path,
            Limits {
                max_size: 6,
                max_files: 1,
            },
        )
        .unwrap();
        log.write(b"aaaa\n").unwrap();
        log.write(b"bbbb\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "bbbb\n");
        assert_eq!(files_oldest_first(&path), [path]);
    }
}
