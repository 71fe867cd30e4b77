//! Audit files on disk: daily names, listing in chain order, permissions, reading lines.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use super::AuditError;

/// Mode of the audit directory when hopguard creates it.
pub const DIR_MODE: u32 = 0o750;
/// Mode of every audit file hopguard creates.
pub const FILE_MODE: u32 = 0o640;

const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";

/// One daily audit file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditFile {
    pub date: NaiveDate,
    pub path: PathBuf,
    /// The file name, `audit-YYYY-MM-DD.jsonl`.
    pub name: String,
}

/// `audit-YYYY-MM-DD.jsonl` for a UTC day.
pub fn file_name(date: NaiveDate) -> String {
    format!("{PREFIX}{}{SUFFIX}", date.format("%Y-%m-%d"))
}

/// The day of an audit file name; `None` for any other name (those files are ignored).
pub fn parse_file_name(name: &str) -> Option<NaiveDate> {
    let day = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let date = NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
    (file_name(date) == name).then_some(date)
}

/// The audit files of `dir`, oldest first: the order of the chain.
pub fn list(dir: &Path) -> io::Result<Vec<AuditFile>> {
    let mut files = Vec::new();
    for item in fs::read_dir(dir)? {
        let item = item?;
        let Some(name) = item.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(date) = parse_file_name(&name) {
            if item.file_type()?.is_file() {
                files.push(AuditFile {
                    date,
                    path: item.path(),
                    name,
                });
            }
        }
    }
    files.sort_by_key(|f| f.date);
    Ok(files)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates `dir` with mode 0750 if it does not exist (an existing directory keeps its mode).
pub fn create_dir(dir: &Path) -> Result<(), AuditError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_err(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(io_err(dir))
}

/// Opens `path` for appending; a new file gets mode 0640 and its directory entry is fsynced
/// before this returns.
pub fn open_append(path: &Path) -> Result<File, AuditError> {
    let existed = path.exists();
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io_err(path))?;
    if !existed {
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
            .map_err(io_err(path))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(file)
}

/// fsyncs a directory, making the names created in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// One line as read from a file.
pub struct Line<'a> {
    /// 1-based line number.
    pub number: u64,
    /// The bytes without the newline.
    pub bytes: &'a [u8],
    /// False for a last line that does not end with `\n` (a cut file or interrupted write).
    pub complete: bool,
}

/// Reads a file line by line without holding it in memory.
pub struct LineReader {
    inner: BufReader<File>,
    buf: Vec<u8>,
    number: u64,
}

impl LineReader {
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            inner: BufReader::with_capacity(64 * 1024, File::open(path)?),
            buf: Vec::new(),
            number: 0,
        })
    }

    /// The next line, or `None` at the end of the file.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        if self.inner.read_until(b'\n', &mut self.buf)? == 0 {
            return Ok(None);
        }
        self.number += 1;
        let complete = self.buf.last() == Some(&b'\n');
        let end = if complete {
            self.buf.len() - 1
        } else {
            self.buf.len()
        };
        Ok(Some(Line {
            number: self.number,
            bytes: &self.buf[..end],
            complete,
        }))
    }
}

/// The last line of a file: (line number, bytes without newline, complete). `None` if empty.
/// Reads the whole file once (line numbers are counted), holding only two lines in memory.
pub fn last_line(path: &Path) -> io::Result<Option<(u64, Vec<u8>, bool)>> {
    let mut reader = BufReader::with_capacity(64 * 1024, File::open(path)?);
    let (mut current, mut last) = (Vec::new(), Vec::new());
    let mut number = 0;
    loop {
        current.clear();
        if reader.read_until(b'\n', &mut current)? == 0 {
            break;
        }
        number += 1;
        std::mem::swap(&mut current, &mut last);
    }
    if number == 0 {
        return Ok(None);
    }
    let complete = last.last() == Some(&b'\n');
    if complete {
        last.pop();
    }
    Ok(Some((number, last, complete)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_others_are_ignored() {
        let d = NaiveDate::from_ymd_opt(2025, 3, 1).expect("date");
        assert_eq!(file_name(d), "audit-2025-03-01.jsonl");
        assert_eq!(parse_file_name("audit-2025-03-01.jsonl"), Some(d));
        for other in [
            "audit-2025-3-1.jsonl",
            "audit-2025-03-01.jsonl.bak",
            "audit-key.pem",
            "audit-2025-02-30.jsonl",
        ] {
            assert_eq!(parse_file_name(other), None, "{other}");
        }
    }
}
