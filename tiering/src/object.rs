//! The flush object format (version 1): one object per flush holding many partitions.
//!
//! ```text
//! header   "SKFW" | version u16 = 1 | flags u16 = 0                         8 bytes
//! sections one per partition: its record batches, verbatim Kafka v2 bytes
//!          with base offsets assigned, back to back
//! footer   JSON array of SectionMeta (topic, partition, offsets, position, length, crc32c)
//! trailer  footer length u32 | footer crc32c u32 | "SKFW"                    12 bytes
//! ```
//! All integers are big-endian. Sections are what fetch sends to clients, so a read is one ranged
//! GET with no re-encoding; each section's CRC32C is also in the metadata index and checked after
//! every read. The footer makes an object self-describing for the compactor and for recovery.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 4] = b"SKFW";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 8;
pub const TRAILER_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionMeta {
    pub topic: String,
    pub partition: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub position: u64,
    pub length: u64,
    pub crc32c: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ObjectFormatError {
    #[error("not a skiff flush object: {0}")]
    NotAnObject(String),
    #[error("unsupported object version: {0}")]
    UnsupportedVersion(u16),
    #[error("checksum mismatch: {0}")]
    Checksum(String),
}

/// Builds one flush object in memory.
#[derive(Debug)]
pub struct ObjectBuilder {
    buf: BytesMut,
    sections: Vec<SectionMeta>,
    open: Option<SectionMeta>,
}

/// Footer bytes one section takes at most: its `SectionMeta` as JSON (field names and six
/// 64-bit numbers, ~230 bytes) plus its topic name (Kafka's topic characters need no escaping).
pub fn footer_bytes_per_section_max(topic: &str) -> usize {
    256 + topic.len()
}

impl ObjectBuilder {
    /// A builder holding `bytes` of sections and footer without growing: pass the batches' bytes
    /// plus [`footer_bytes_per_section_max`] per section (growing copies the whole object).
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = BytesMut::with_capacity(bytes + HEADER_LEN + TRAILER_LEN + 1024);
        buf.put_slice(MAGIC);
        buf.put_u16(VERSION);
        buf.put_u16(0);
        Self {
            buf,
            sections: Vec::new(),
            open: None,
        }
    }

    /// Starts the section of one partition; batches appended next belong to it.
    pub fn begin_section(&mut self, topic: &str, partition: i32, base_offset: i64) {
        assert!(self.open.is_none(), "previous section not ended");
        self.open = Some(SectionMeta {
            topic: topic.to_owned(),
            partition,
            base_offset,
            last_offset: base_offset - 1,
            max_timestamp: -1,
            position: self.buf.len() as u64,
            length: 0,
            crc32c: 0,
        });
    }

    /// Appends one batch's bytes; returns a mutable view so the caller can rewrite its header.
    pub fn append_batch(&mut self, batch: &[u8]) -> &mut [u8] {
        assert!(self.open.is_some(), "append outside a section");
        let start = self.buf.len();
        self.buf.put_slice(batch);
        &mut self.buf[start..]
    }

    /// Records the offsets and timestamp the section's batches cover.
    pub fn note_batch(&mut self, last_offset: i64, max_timestamp: i64) {
        let open = self.open.as_mut().expect("note outside a section");
        open.last_offset = last_offset;
        open.max_timestamp = open.max_timestamp.max(max_timestamp);
    }

    pub fn end_section(&mut self) -> SectionMeta {
        let mut section = self.open.take().expect("no open section");
        let start = usize::try_from(section.position).expect("position fits usize");
        section.length = (self.buf.len() - start) as u64;
        section.crc32c = crc32c::crc32c(&self.buf[start..]);
        self.sections.push(section.clone());
        section
    }

    pub fn finish(mut self) -> (Bytes, Vec<SectionMeta>) {
        assert!(self.open.is_none(), "section left open");
        let footer = serde_json::to_vec(&self.sections).expect("section metadata serializes");
        let footer_crc = crc32c::crc32c(&footer);
        self.buf.put_slice(&footer);
        self.buf
            .put_u32(u32::try_from(footer.len()).expect("footer under 4 GiB"));
        self.buf.put_u32(footer_crc);
        self.buf.put_slice(MAGIC);
        (self.buf.freeze(), self.sections)
    }
}

/// Reads and checks the footer of a whole object.
pub fn read_footer(object: &[u8]) -> Result<Vec<SectionMeta>, ObjectFormatError> {
    if object.len() < HEADER_LEN + TRAILER_LEN || &object[..4] != MAGIC {
        return Err(ObjectFormatError::NotAnObject("bad header".into()));
    }
    let version = u16::from_be_bytes([object[4], object[5]]);
    if version != VERSION {
        return Err(ObjectFormatError::UnsupportedVersion(version));
    }
    let trailer = &object[object.len() - TRAILER_LEN..];
    if &trailer[8..] != MAGIC {
        return Err(ObjectFormatError::NotAnObject("bad trailer".into()));
    }
    let footer_len = u32::from_be_bytes(trailer[0..4].try_into().expect("4 bytes")) as usize;
    let footer_crc = u32::from_be_bytes(trailer[4..8].try_into().expect("4 bytes"));
    let footer_end = object.len() - TRAILER_LEN;
    let footer_start = footer_end
        .checked_sub(footer_len)
        .filter(|start| *start >= HEADER_LEN)
        .ok_or_else(|| ObjectFormatError::NotAnObject("footer length".into()))?;
    let footer = &object[footer_start..footer_end];
    if crc32c::crc32c(footer) != footer_crc {
        return Err(ObjectFormatError::Checksum("footer".into()));
    }
    serde_json::from_slice(footer).map_err(|e| ObjectFormatError::NotAnObject(e.to_string()))
}

/// Checks a section's bytes against the CRC32C recorded when it was written.
pub fn verify_section(bytes: &[u8], expected_crc32c: u32) -> Result<(), ObjectFormatError> {
    let actual = crc32c::crc32c(bytes);
    if actual != expected_crc32c {
        return Err(ObjectFormatError::Checksum(format!(
            "section expected={expected_crc32c:#010x} actual={actual:#010x}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_estimate_covers_the_widest_section() {
        let topic = "t".repeat(249); // Kafka's longest topic name
        let widest = SectionMeta {
            topic: topic.clone(),
            partition: i32::MIN,
            base_offset: i64::MIN,
            last_offset: i64::MIN,
            max_timestamp: i64::MIN,
            position: u64::MAX,
            length: u64::MAX,
            crc32c: u32::MAX,
        };
        let json = serde_json::to_vec(&widest).expect("serializes");
        // Room for one separating comma per section as well.
        assert!(
            json.len() < footer_bytes_per_section_max(&topic),
            "{}",
            json.len()
        );
    }

    #[test]
    fn round_trips_sections_and_footer() {
        let mut builder = ObjectBuilder::with_capacity(64);
        builder.begin_section("a", 0, 10);
        builder.append_batch(b"first-batch");
        builder.note_batch(12, 5);
        builder.append_batch(b"second");
        builder.note_batch(13, 9);
        let a = builder.end_section();
        builder.begin_section("b", 3, 0);
        builder.append_batch(b"xyz");
        builder.note_batch(0, 1);
        builder.end_section();
        let (object, sections) = builder.finish();
        assert_eq!(read_footer(&object).expect("footer"), sections);
        assert_eq!(a.base_offset, 10);
        assert_eq!(a.last_offset, 13);
        assert_eq!(a.max_timestamp, 9);
        let range = a.position as usize..(a.position + a.length) as usize;
        assert_eq!(&object[range.clone()], b"first-batchsecond");
        verify_section(&object[range], a.crc32c).expect("crc");
    }

    #[test]
    fn detects_damage() {
        let mut builder = ObjectBuilder::with_capacity(8);
        builder.begin_section("a", 0, 0);
        builder.append_batch(b"data");
        builder.note_batch(0, 0);
        let section = builder.end_section();
        let (object, _) = builder.finish();
        let mut damaged = object.to_vec();
        let at = damaged.len() - TRAILER_LEN - 2;
        damaged[at] ^= 1;
        assert!(read_footer(&damaged).is_err());
        assert!(verify_section(b"dat4", section.crc32c).is_err());
        assert!(read_footer(b"short").is_err());
        let mut wrong_version = object.to_vec();
        wrong_version[5] = 9;
        assert_eq!(
            read_footer(&wrong_version),
            Err(ObjectFormatError::UnsupportedVersion(9))
        );
    }

    /// Fuzzing the footer reader (stable toolchain): proptest mutates the objects kept in
    /// `tiering/fuzz/corpus/objects/`, fixing the footer CRC half the time so the mutation
    /// reaches the JSON and the section checks. `SKIFF_FUZZ_CASES` sets the number of cases.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;
        use std::path::{Path, PathBuf};

        fn corpus() -> PathBuf {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/objects")
        }

        fn seeds() -> Vec<Vec<u8>> {
            let mut files: Vec<_> = std::fs::read_dir(corpus())
                .expect("object corpus")
                .map(|e| e.expect("entry").path())
                .collect();
            files.sort();
            let seeds: Vec<_> = files
                .iter()
                .map(|f| std::fs::read(f).expect("seed"))
                .collect();
            assert!(!seeds.is_empty(), "empty object corpus");
            seeds
        }

        fn cases() -> u32 {
            std::env::var("SKIFF_FUZZ_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2_000)
        }

        fn fix_footer_crc(object: &mut [u8]) {
            if object.len() < HEADER_LEN + TRAILER_LEN {
                return;
            }
            let trailer = object.len() - TRAILER_LEN;
            let footer_len =
                u32::from_be_bytes(object[trailer..trailer + 4].try_into().expect("4")) as usize;
            if footer_len > trailer {
                return;
            }
            let crc = crc32c::crc32c(&object[trailer - footer_len..trailer]);
            object[trailer + 4..trailer + 8].copy_from_slice(&crc.to_be_bytes());
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

            #[test]
            fn fuzz_object_footer_reader(
                seed in any::<prop::sample::Index>(),
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                truncate in proptest::option::of(any::<prop::sample::Index>()),
                fix_crc in any::<bool>(),
            ) {
                let seeds = seeds();
                let mut object = seeds[seed.index(seeds.len())].clone();
                for (at, byte) in &edits {
                    let at = at.index(object.len());
                    object[at] = *byte;
                }
                if let Some(at) = truncate {
                    object.truncate(at.index(object.len() + 1));
                }
                if fix_crc {
                    fix_footer_crc(&mut object);
                }
                if let Ok(sections) = read_footer(&object) {
                    for section in sections {
                        let range = usize::try_from(section.position).ok().and_then(|start| {
                            Some(start..start.checked_add(usize::try_from(section.length).ok()?)?)
                        });
                        if let Some(bytes) = range.and_then(|r| object.get(r)) {
                            let _ = verify_section(bytes, section.crc32c);
                        }
                    }
                }
            }
        }

        #[test]
        #[ignore = "rewrites tiering/fuzz/corpus/objects; run by hand"]
        fn write_object_corpus() {
            std::fs::create_dir_all(corpus()).expect("corpus dir");
            let mut builder = ObjectBuilder::with_capacity(256);
            for (partition, topic) in ["orders", "clicks", "orders"].iter().enumerate() {
                builder.begin_section(topic, partition as i32, 100 * partition as i64);
                builder.append_batch(&crate::batch::tests::sample_batch(3, 1_000, 16));
                builder.note_batch(100 * partition as i64 + 2, 1_000);
                builder.end_section();
            }
            let (object, _) = builder.finish();
            std::fs::write(corpus().join("three_sections.bin"), &object).expect("seed");
            let (empty, _) = ObjectBuilder::with_capacity(0).finish();
            std::fs::write(corpus().join("empty.bin"), &empty).expect("seed");
        }
    }
}
