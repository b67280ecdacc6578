//! Which files a path pattern names: `/var/log/app.log`, `/var/log/*.log`, `/srv/*/logs/*.log`.
//!
//! The `glob` crate matches on UTF-8 text and silently skips names that are not UTF-8, which Linux
//! allows and which some applications write. Here the folders are expanded with `glob`, and the last
//! component is matched against each entry's name with invalid bytes shown as U+FFFD (which `*` and `?`
//! match), keeping the real name. Only regular files (or symlinks to them) are returned: a directory,
//! FIFO or socket that a pattern happens to match is not a log file.

use std::path::{Path, PathBuf};

use super::SourceError;

/// True when `pattern` has glob metacharacters.
pub fn is_pattern(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// The regular files `pattern` names now, sorted. A plain path names itself if it is a regular file.
/// A malformed pattern is an error that says so.
pub fn expand(pattern: &str) -> Result<Vec<PathBuf>, SourceError> {
    if !is_pattern(pattern) {
        let path = PathBuf::from(pattern);
        return Ok(if path.is_file() {
            vec![path]
        } else {
            Vec::new()
        });
    }
    let full = Path::new(pattern);
    let (Some(parent), Some(last)) = (full.parent(), full.file_name().and_then(|n| n.to_str()))
    else {
        return Err(SourceError::BadGlob {
            pattern: pattern.to_owned(),
            reason: "it names no file".into(),
        });
    };
    let name_pattern = glob::Pattern::new(last).map_err(|e| SourceError::bad_glob(pattern, e))?;
    let parent_text = parent.to_string_lossy();
    let dirs: Vec<PathBuf> = if parent_text.is_empty() {
        vec![PathBuf::from(".")]
    } else if is_pattern(&parent_text) {
        glob::glob(&parent_text)
            .map_err(|e| SourceError::bad_glob(pattern, e))?
            .filter_map(Result::ok)
            .filter(|d| d.is_dir())
            .collect()
    } else {
        vec![parent.to_path_buf()]
    };
    let options = glob::MatchOptions {
        require_literal_leading_dot: true,
        ..glob::MatchOptions::default()
    };
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            if !name_pattern.matches_with(&name.to_string_lossy(), options) {
                continue;
            }
            let path = if parent_text.is_empty() {
                PathBuf::from(&name)
            } else {
                dir.join(&name)
            };
            if path.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn names_that_are_not_utf8_are_matched_and_non_files_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.log"));
        std::fs::write(&odd, "x\n").expect("odd name");
        std::fs::write(dir.path().join("plain.log"), "x\n").expect("plain");
        std::fs::write(dir.path().join(".hidden.log"), "x\n").expect("hidden");
        std::fs::create_dir(dir.path().join("folder.log")).expect("dir");
        let fifo = dir.path().join("pipe.log");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success());
        let pattern = format!("{}/*.log", dir.path().display());
        let got = expand(&pattern).expect("expands");
        assert_eq!(got, vec![odd, dir.path().join("plain.log")]);
        // Folders are expanded too.
        let nested = format!("{}/*/x.log", dir.path().display());
        std::fs::create_dir(dir.path().join("sub")).expect("sub");
        std::fs::write(dir.path().join("sub/x.log"), "x\n").expect("x");
        assert_eq!(
            expand(&nested).expect("nested"),
            vec![dir.path().join("sub/x.log")]
        );
        assert!(expand(&format!("{}/[.log", dir.path().display())).is_err());
    }
}
