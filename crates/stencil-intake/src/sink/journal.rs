//! Append journal: a batch's appends to several files are all or nothing across a crash.
//!
//! A process killed in the middle of `write(2)` can leave part of a batch in a file (Linux stops a large
//! write between pages when SIGKILL arrives). That batch was never acked, so the agent sends it again, and
//! the replay would be glued to the torn tail. So before a batch is appended, the journal records each
//! file's length; once every append has returned, the record is cleared. A record found on open means the
//! last batch did not finish: each file it names is cut back to its recorded length. This loses nothing,
//! because a batch is only acked after its record is cleared.
//!
//! A record is a magic number, the body's length, a checksum of the body, then the body: (length, path)
//! per file. It is written at the start of the journal file in one write, and cleared by zeroing its
//! header (cheaper than truncating the file on every batch); what follows a record is left over from
//! longer ones and ignored. A record whose checksum does not match was torn while being written, before
//! any append began, and is ignored too. With `fsync`, the record is synced before the appends and the
//! clearing is synced before the ack, so the rule also holds across a power loss.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// First bytes of a record.
const MAGIC: &[u8; 8] = b"STNCLJ2\n";
/// What replaces a record's header (magic number, length, checksum) when it is cleared: a record torn
/// while being written over a cleared one then never reads as that older record.
const CLEARED: &[u8; 24] = &[0; 24];

/// A file cut back to its length before an unfinished batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// The file.
    pub path: PathBuf,
    /// Its length before the unfinished batch, which it now has again.
    pub len: u64,
    /// Bytes of the unfinished batch that were removed.
    pub removed: u64,
}

/// The journal of one sink: one small file next to what the sink writes.
pub struct AppendJournal {
    file: File,
    fsync: bool,
    /// The record of the batch in progress, between `begin` and `commit`.
    pending: Option<Vec<(PathBuf, u64)>>,
}

impl AppendJournal {
    /// Opens (or creates) the journal at `path` and repairs what an unfinished batch left behind.
    pub fn open(path: &Path, fsync: bool) -> std::io::Result<(Self, Vec<Repair>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut journal = AppendJournal {
            file,
            fsync,
            pending: parse(&bytes),
        };
        let repairs = if bytes.is_empty() {
            Vec::new()
        } else {
            journal.rollback()?
        };
        Ok((journal, repairs))
    }

    /// Cuts every file of the batch in progress back to its recorded length and clears the record: for
    /// a batch whose appends failed, or one a crash interrupted.
    pub fn rollback(&mut self) -> std::io::Result<Vec<Repair>> {
        let mut repairs = Vec::new();
        for (path, len) in self.pending.clone().unwrap_or_default() {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.len() > len {
                OpenOptions::new().write(true).open(&path)?.set_len(len)?;
                repairs.push(Repair {
                    removed: meta.len() - len,
                    path,
                    len,
                });
            }
        }
        self.commit()?;
        Ok(repairs)
    }

    /// Records the length of every file a batch is about to append to. Call before the first append.
    /// A batch begun and never committed or rolled back is rolled back first.
    pub fn begin<'a>(
        &mut self,
        files: impl IntoIterator<Item = (&'a Path, u64)>,
    ) -> std::io::Result<()> {
        if self.pending.is_some() {
            self.rollback()?;
        }
        let files: Vec<(PathBuf, u64)> = files
            .into_iter()
            .map(|(p, len)| (p.to_owned(), len))
            .collect();
        let mut body = Vec::new();
        for (path, len) in &files {
            let name = path.as_os_str().as_bytes();
            body.extend_from_slice(&len.to_le_bytes());
            body.extend_from_slice(&(name.len() as u64).to_le_bytes());
            body.extend_from_slice(name);
        }
        let mut record = Vec::with_capacity(24 + body.len());
        record.extend_from_slice(MAGIC);
        record.extend_from_slice(&(body.len() as u64).to_le_bytes());
        record.extend_from_slice(&checksum(&body).to_le_bytes());
        record.extend_from_slice(&body);
        self.pending = Some(files);
        self.file.write_all_at(&record, 0)?;
        if self.fsync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Clears the record: every append of the batch has returned. Call before the batch is acked.
    pub fn commit(&mut self) -> std::io::Result<()> {
        self.file.write_all_at(CLEARED, 0)?;
        if self.fsync {
            self.file.sync_data()?;
        }
        self.pending = None;
        Ok(())
    }
}

/// The (file, length) pairs of a complete record, or `None` for a cleared, empty or torn one.
fn parse(bytes: &[u8]) -> Option<Vec<(PathBuf, u64)>> {
    let (len, rest) = take_u64(bytes.strip_prefix(MAGIC)?)?;
    let (sum, rest) = take_u64(rest)?;
    let body = rest.get(..usize::try_from(len).ok()?)?;
    if checksum(body) != sum {
        return None;
    }
    let mut rest = body;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (len, r) = take_u64(rest)?;
        let (name_len, r) = take_u64(r)?;
        let name_len = usize::try_from(name_len).ok()?;
        if r.len() < name_len {
            return None;
        }
        let (name, r) = r.split_at(name_len);
        out.push((
            PathBuf::from(std::ffi::OsStr::from_bytes(name).to_owned()),
            len,
        ));
        rest = r;
    }
    Some(out)
}

/// FNV-1a (64-bit): enough to tell a whole record from one torn by a crash.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn take_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*head), rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn an_unfinished_batch_is_cut_back_and_a_finished_one_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.log");
        let b = dir.path().join("sub dir\nodd.log");
        std::fs::write(&a, b"one\ntwo\n").expect("a");
        std::fs::write(&b, b"x").expect("b");
        let jpath = dir.path().join(".journal");

        let (mut j, repairs) = AppendJournal::open(&jpath, false).expect("open");
        assert!(repairs.is_empty());
        // A finished batch.
        j.begin([(a.as_path(), 8)]).expect("begin");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&a)
            .and_then(|mut f| f.write_all(b"three\n"))
            .expect("append");
        j.commit().expect("commit");
        // An unfinished one: the process "dies" after a torn append to each file.
        j.begin([(a.as_path(), 14), (b.as_path(), 1)])
            .expect("begin");
        for (p, torn) in [(&a, &b"fou"[..]), (&b, &b"yy"[..])] {
            std::fs::OpenOptions::new()
                .append(true)
                .open(p)
                .and_then(|mut f| f.write_all(torn))
                .expect("append");
        }
        drop(j);

        let (_j, repairs) = AppendJournal::open(&jpath, false).expect("reopen");
        assert_eq!(std::fs::read(&a).expect("a"), b"one\ntwo\nthree\n");
        assert_eq!(std::fs::read(&b).expect("b"), b"x");
        assert_eq!(
            repairs.iter().map(|r| r.removed).collect::<Vec<_>>(),
            [3, 2]
        );
        assert_eq!(parse(&std::fs::read(&jpath).expect("journal")), None);
        // Reopened again: nothing more is cut.
        let (_j, repairs) = AppendJournal::open(&jpath, false).expect("reopen");
        assert!(repairs.is_empty());
        assert_eq!(std::fs::read(&a).expect("a"), b"one\ntwo\nthree\n");
    }

    #[test]
    fn a_torn_record_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.log");
        std::fs::write(&a, b"one\ntwo\n").expect("a");
        let jpath = dir.path().join(".journal");
        // An earlier, longer record (cleared) leaves its bytes behind the next one.
        let other = dir.path().join("a-much-longer-name-than-a.log");
        let (mut j, _) = AppendJournal::open(&jpath, false).expect("open");
        j.begin([(other.as_path(), 7), (a.as_path(), 2)])
            .expect("begin");
        j.commit().expect("commit");
        let stale = std::fs::read(&jpath).expect("old record");
        j.begin([(a.as_path(), 4)]).expect("begin");
        drop(j);
        let full = std::fs::read(&jpath).expect("record");
        let record_len = 24 + 16 + a.as_os_str().len();
        assert!(
            full.len() > record_len,
            "the old record's tail is still there"
        );
        // Every cut of the new record, over what the old one left: the appends never began, nothing is cut.
        for cut in 0..record_len {
            let mut torn = full[..cut].to_vec();
            torn.extend_from_slice(&stale[cut..]);
            for bytes in [&full[..cut], &torn[..]] {
                std::fs::write(&jpath, bytes).expect("torn record");
                let (_j, repairs) = AppendJournal::open(&jpath, false).expect("reopen");
                assert!(repairs.is_empty(), "cut at {cut}");
                assert_eq!(std::fs::read(&a).expect("a"), b"one\ntwo\n");
            }
        }
        // The whole record does cut the file back.
        std::fs::write(&jpath, &full).expect("record");
        let (_j, repairs) = AppendJournal::open(&jpath, false).expect("reopen");
        assert_eq!(repairs.len(), 1);
        assert_eq!(std::fs::read(&a).expect("a"), b"one\n");
    }
}
