//! The store's journal: `DATA_DIR/store.journal`, an append-only log of
//! the writes applied to redb since its last durable commit.
//!
//! The writer applies each group to redb without an fsync, appends the
//! group's records here with one `write`, and (with `durability =
//! "fsync"`) one `fdatasync` before it answers. Now and then it folds: one
//! durable redb commit, which also records the journal's generation as
//! folded, and the journal starts again at its head under the next
//! generation. On open, records of a generation not yet folded are applied
//! again.
//!
//! The file is preallocated and zero-filled, so an `fdatasync` flushes the
//! data written and no file-size or extent metadata. Layout:
//!
//! ```text
//! header:  [magic: 8 bytes][generation: u64 LE][crc32 of the 16 bytes before: u32 LE]
//! record:  [len: u32 LE][crc32 of generation and payload: u32 LE][generation: u64 LE][payload: len bytes]
//! ```
//!
//! A record is whole when its CRC matches and its generation is the
//! header's: records left behind by an earlier generation (the journal
//! starts again at its head) never pass. Reading stops at the first record
//! that is not whole: a write torn by a crash, or damage. Everything
//! before it is kept, and what was cut is reported.

use std::fs::File;
use std::io::{Read, Write};

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The file name inside the data directory.
pub const JOURNAL_FILE: &str = "store.journal";
const MAGIC: &[u8; 8] = b"HLJOURN1";
const HEADER_LEN: u64 = 8 + 8 + 4;
const RECORD_HEADER_LEN: usize = 4 + 4 + 8;
/// The journal's size on disk, preallocated.
pub(super) const SEGMENT_BYTES: u64 = 4 << 20;
/// The largest record read back: anything longer is damage.
const MAX_RECORD: u32 = (SEGMENT_BYTES - HEADER_LEN) as u32;

/// The journal file, open for appending.
#[derive(Debug)]
pub(super) struct Journal {
    path: PathBuf,
    file: File,
    generation: u64,
    /// Where the next record goes.
    end: u64,
}

/// What opening the journal found.
#[derive(Debug, Default)]
pub(super) struct Replay {
    /// The payloads of the whole records of a generation not yet folded,
    /// in order.
    pub records: Vec<Vec<u8>>,
    /// Where reading stopped before the file's end and why, when the rest
    /// was not empty: a torn write or damage, cut off.
    pub cut: Option<String>,
}

impl Journal {
    /// Opens `dir`'s journal (creating and preallocating it if missing).
    /// Records of generations up to `folded` are in redb already; the
    /// whole records of a later one are returned for replay. The journal
    /// then appends under the generation after the newest seen; call
    /// [`Self::restart`] once the replayed records are folded.
    pub(super) fn open(dir: &Path, folded: u64) -> std::io::Result<(Self, Replay)> {
        let path = dir.join(JOURNAL_FILE);
        let existing = path.exists();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if !existing || file.metadata()?.len() < SEGMENT_BYTES {
            preallocate(&file)?;
            if !existing {
                File::open(dir)?.sync_all()?;
            }
        }
        let mut head = [0u8; HEADER_LEN as usize];
        let (generation, replay) = match file.read_exact_at(&mut head, 0).ok().and_then(|()| read_header(&head)) {
            Some(generation) if generation > folded => {
                // Only then is the whole file read: after a clean stop
                // (everything folded) opening reads 20 bytes.
                let mut bytes = Vec::with_capacity(SEGMENT_BYTES as usize);
                (&file).read_to_end(&mut bytes)?;
                (generation, read_records(&bytes, generation))
            }
            Some(generation) => (generation, Replay::default()),
            // Never written (a fresh file), or a header torn while it was
            // rewritten: only ever rewritten right after a fold, so there
            // is nothing to replay.
            None => (folded, Replay::default()),
        };
        let mut journal = Self {
            path,
            file,
            generation: generation.max(folded),
            end: HEADER_LEN,
        };
        if replay.records.is_empty() {
            journal.restart(journal.generation + 1)?;
        } else {
            journal.end = HEADER_LEN + replay.bytes();
        }
        Ok((journal, replay))
    }

    /// The generation records are appended under.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// The journal file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of records since the head.
    pub(super) fn used(&self) -> u64 {
        self.end - HEADER_LEN
    }

    /// Whether `records` fit after what is written.
    pub(super) fn fits(&self, records: &[u8]) -> bool {
        self.end + records.len() as u64 <= SEGMENT_BYTES
    }

    /// Frames `payload` as one record of this generation onto `out`.
    pub(super) fn frame(&self, payload: &[u8], out: &mut Vec<u8>) {
        frame(self.generation, payload, out);
    }

    /// Writes framed records (see [`Self::frame`]) after the last, in one
    /// write; `sync` flushes them to the disk before returning.
    pub(super) fn append(&mut self, records: &[u8], sync: bool) -> std::io::Result<()> {
        if !self.fits(records) {
            return Err(std::io::Error::other("the journal is full; it must be folded first"));
        }
        self.file.write_all_at(records, self.end)?;
        self.end += records.len() as u64;
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Starts again at the head under `generation`, once everything of the
    /// generations before it is folded into redb: the header is rewritten
    /// and flushed before any record of the new generation is written.
    pub(super) fn restart(&mut self, generation: u64) -> std::io::Result<()> {
        self.file.write_all_at(&header(generation), 0)?;
        self.file.sync_data()?;
        self.generation = generation;
        self.end = HEADER_LEN;
        Ok(())
    }
}

impl Replay {
    /// Bytes the records take in the journal.
    fn bytes(&self) -> u64 {
        self.records.iter().map(|r| (RECORD_HEADER_LEN + r.len()) as u64).sum()
    }
}

/// Fills the file with zeros up to [`SEGMENT_BYTES`] and flushes it, so
/// appends never change its size or allocation.
fn preallocate(file: &File) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    let zeros = vec![0u8; 64 << 10];
    let mut at = len;
    while at < SEGMENT_BYTES {
        let n = zeros.len().min((SEGMENT_BYTES - at) as usize);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    (&*file).flush()?;
    file.sync_all()
}

fn frame(generation: u64, payload: &[u8], out: &mut Vec<u8>) {
    let generation = generation.to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&generation);
    crc.update(payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&generation);
    out.extend_from_slice(payload);
}

fn header(generation: u64) -> [u8; HEADER_LEN as usize] {
    let mut out = [0u8; HEADER_LEN as usize];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&out[..16]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The generation a journal's header names, if the header is whole.
fn read_header(bytes: &[u8]) -> Option<u64> {
    let header = bytes.get(..HEADER_LEN as usize)?;
    if &header[..8] != MAGIC || crc32fast::hash(&header[..16]).to_le_bytes() != header[16..20] {
        return None;
    }
    Some(u64::from_le_bytes(header[8..16].try_into().ok()?))
}

/// The fuzz target's check (`crate::fuzzing::store_journal`): reading any
/// bytes as a journal never panics, and the records it finds, written out
/// again under the same generation, read back the same and whole.
pub(crate) fn check_reader(bytes: &[u8]) {
    let generation = read_header(bytes).unwrap_or(0);
    let replay = read_records(bytes, generation);
    let mut again = header(generation).to_vec();
    for record in &replay.records {
        frame(generation, record, &mut again);
    }
    assert_eq!(read_header(&again), Some(generation));
    let reread = read_records(&again, generation);
    assert_eq!(reread.records, replay.records, "records read back differently");
    assert!(reread.cut.is_none(), "whole records were cut: {:?}", reread.cut);
}

/// The whole records of `generation` from the head of `bytes` (a journal
/// file's contents), up to the first that is not.
fn read_records(bytes: &[u8], generation: u64) -> Replay {
    let mut replay = Replay::default();
    let mut at = HEADER_LEN as usize;
    let stop = loop {
        let Some(head) = bytes.get(at..at + RECORD_HEADER_LEN) else {
            break None;
        };
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        let written = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
        if len == 0 && crc == 0 && written == 0 {
            // Zeros: where nothing was written yet.
            break None;
        }
        if written != generation {
            // Left behind by an earlier generation.
            break None;
        }
        if len > MAX_RECORD {
            break Some(format!(
                "a record at byte {at} claims {len} bytes, more than the journal holds"
            ));
        }
        let start = at + RECORD_HEADER_LEN;
        let Some(payload) = bytes.get(start..start + len as usize) else {
            break Some(format!(
                "the record at byte {at} ends past the file ({} bytes)",
                bytes.len()
            ));
        };
        let mut check = crc32fast::Hasher::new();
        check.update(&head[8..16]);
        check.update(payload);
        if check.finalize() != crc {
            break Some(format!("the record at byte {at} fails its checksum"));
        }
        replay.records.push(payload.to_vec());
        at = start + len as usize;
    };
    replay.cut = stop.map(|why| {
        format!(
            "{why}: it and the {} bytes after it were cut (a write torn by a crash, or damage); the {} records before it are kept",
            bytes.len().saturating_sub(at),
            replay.records.len()
        )
    });
    replay
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("record {i} {}", "x".repeat(i * 7)).into_bytes())
            .collect()
    }

    fn write(dir: &Path, records: &[Vec<u8>], sync: bool) -> Journal {
        let (mut journal, replay) = Journal::open(dir, 0).unwrap();
        assert!(replay.records.is_empty());
        let mut out = Vec::new();
        for record in records {
            journal.frame(record, &mut out);
        }
        journal.append(&out, sync).unwrap();
        journal
    }

    #[test]
    fn records_read_back_in_order_until_folded() {
        let dir = tempfile::tempdir().unwrap();
        let records = payloads(20);
        let journal = write(dir.path(), &records, true);
        let generation = journal.generation();
        drop(journal);
        let (journal, replay) = Journal::open(dir.path(), generation - 1).unwrap();
        assert_eq!(replay.records, records);
        assert!(replay.cut.is_none(), "{:?}", replay.cut);
        assert_eq!(journal.generation(), generation);
        drop(journal);
        // Folded: nothing to replay, and the next generation starts.
        let (journal, replay) = Journal::open(dir.path(), generation).unwrap();
        assert!(replay.records.is_empty());
        assert_eq!(journal.generation(), generation + 1);
        assert_eq!(std::fs::metadata(journal.path()).unwrap().len(), SEGMENT_BYTES);
    }

    #[test]
    fn an_earlier_generations_records_are_never_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = write(dir.path(), &payloads(10), false);
        let next = journal.generation() + 1;
        journal.restart(next).unwrap();
        let mut out = Vec::new();
        journal.frame(b"only this", &mut out);
        journal.append(&out, true).unwrap();
        drop(journal);
        let (_, replay) = Journal::open(dir.path(), next - 1).unwrap();
        assert_eq!(replay.records, [b"only this".to_vec()]);
        assert!(replay.cut.is_none(), "{:?}", replay.cut);
    }

    /// A torn last record, cut at every byte of it: everything before it
    /// is replayed, and the cut is reported unless nothing of it remains.
    #[test]
    fn a_torn_tail_keeps_every_record_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let records = payloads(5);
        let journal = write(dir.path(), &records, true);
        let generation = journal.generation();
        let path = journal.path().to_path_buf();
        drop(journal);
        let whole = std::fs::read(&path).unwrap();
        let last_len = RECORD_HEADER_LEN + records[4].len();
        let end = HEADER_LEN as usize + records.iter().map(|r| RECORD_HEADER_LEN + r.len()).sum::<usize>();
        let last_start = end - last_len;
        for keep in 0..last_len {
            // Truncated at this byte of the last record...
            let replay = read_records(&whole[..last_start + keep], generation);
            assert_eq!(replay.records, records[..4], "cut at byte {keep}");
            assert_eq!(
                replay.cut.is_some(),
                keep >= RECORD_HEADER_LEN,
                "cut at byte {keep}: {:?}",
                replay.cut
            );
            // ...or torn in place: the rest of it zeros, as never written.
            let mut torn = whole.clone();
            torn[last_start + keep..end].fill(0);
            let replay = read_records(&torn, generation);
            assert_eq!(replay.records, records[..4], "torn at byte {keep}");
        }
        // A flipped bit in the third record keeps the first two.
        let mut damaged = whole.clone();
        let third = HEADER_LEN as usize + (0..2).map(|i| RECORD_HEADER_LEN + records[i].len()).sum::<usize>();
        damaged[third + RECORD_HEADER_LEN + 3] ^= 1;
        let replay = read_records(&damaged, generation);
        assert_eq!(replay.records, records[..2]);
        assert!(replay.cut.unwrap().contains("fails its checksum"));
    }

    #[test]
    fn a_group_that_does_not_fit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path(), 0).unwrap();
        let mut out = Vec::new();
        journal.frame(&vec![7u8; SEGMENT_BYTES as usize], &mut out);
        assert!(!journal.fits(&out));
        assert!(journal.append(&out, false).is_err());
        assert_eq!(journal.used(), 0);
    }
}
