//! Bounds checks of an RPM header structure (intro, index, store) before any parser sees it.
//!
//! The rpm crate trusts the index: an entry's count sizes an allocation before the store is
//! read (an INT64 entry with a count of 2^32-1 reserves 34 GB and aborts the process), and
//! offsets index the store directly. Every entry is checked here the way rpm's own
//! `hdrchkType`/`hdrchkData`/`hdrchkRange` do, and more strictly: known type, count at
//! least 1, aligned offset, and every byte it refers to (strings with their NULs) inside
//! the store, and no two entries' data overlapping (rpm's own rule). A header that passes
//! cannot make the parser read outside the store, and what the parser materializes is
//! bounded by the store's size plus MAX_STRINGS string headers.

use std::io::Read;

/// The 8-byte magic every header structure starts with.
pub const MAGIC: [u8; 8] = [0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0];
/// Size of the intro (magic, index count, store size) and of one index entry.
const INTRO: usize = 16;
const ENTRY: usize = 16;

/// Largest signature header signet reads (index and store): far above rpm 6's several
/// signatures plus reserved space.
pub const MAX_SIGNATURE_HEADER: usize = 1024 * 1024;
/// Largest main header signet reads (index and store). Big packages' file lists make
/// headers of a few MiB; rpm itself stops at 256 MiB.
pub const MAX_HEADER: usize = 64 * 1024 * 1024;
/// Most index entries in one header (rpm's HEADER_TAGS_MAX).
pub const MAX_ENTRIES: u32 = 0xffff;
/// Most strings in one header, over all its string entries: the parser keeps a `String`
/// (24 bytes) per string, so this bounds what empty strings can cost. A package with 200,000
/// files has about 1.6 million.
pub const MAX_STRINGS: u64 = 4_000_000;

/// Why a header structure is unusable. The caller turns it into an invalid-input error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("file ends inside the {0}")]
    Truncated(&'static str),
    #[error("bad {0} magic")]
    Magic(&'static str),
    #[error("{what} claims {entries} index entries and {store} store bytes (limit {limit} bytes in all)")]
    TooLarge { what: &'static str, entries: u32, store: u32, limit: usize },
    #[error("{what} entry {index} (tag {tag}): {problem}")]
    Entry { what: &'static str, index: u32, tag: u32, problem: String },
    #[error("I/O error reading the {what}: {message}")]
    Io { what: &'static str, message: String },
}

/// The size in bytes of one item of a fixed-size type; `None` for string types.
fn item_size(kind: u32) -> Option<u64> {
    match kind {
        1 | 2 | 7 => Some(1), // CHAR, INT8, BIN
        3 => Some(2),         // INT16
        4 => Some(4),         // INT32
        5 => Some(8),         // INT64
        _ => None,
    }
}

/// Reads one header structure from `input`, growing the buffer only as bytes arrive (a
/// truncated file cannot make us allocate what its intro claims), and checks its index.
pub fn read(input: &mut dyn Read, what: &'static str, limit: usize) -> Result<Vec<u8>, HeaderError> {
    let mut intro = [0u8; INTRO];
    read_full(input, &mut intro, what)?;
    if intro[..8] != MAGIC {
        return Err(HeaderError::Magic(what));
    }
    let (entries, store) = counts(&intro);
    let len = INTRO as u64 + u64::from(entries) * ENTRY as u64 + u64::from(store);
    if entries == 0 || entries > MAX_ENTRIES || len > limit as u64 {
        return Err(HeaderError::TooLarge { what, entries, store, limit });
    }
    let mut buf = Vec::with_capacity(INTRO.min(len as usize));
    buf.extend_from_slice(&intro);
    let rest = len - INTRO as u64;
    let got = input.take(rest).read_to_end(&mut buf).map_err(|e| HeaderError::Io { what, message: e.to_string() })?;
    if (got as u64) < rest {
        return Err(HeaderError::Truncated(what));
    }
    check(&buf, what)?;
    Ok(buf)
}

fn read_full(input: &mut dyn Read, buf: &mut [u8], what: &'static str) -> Result<(), HeaderError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => HeaderError::Truncated(what),
        _ => HeaderError::Io { what, message: e.to_string() },
    })
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn counts(intro: &[u8]) -> (u32, u32) {
    (be32(intro, 8), be32(intro, 12))
}

/// Checks a whole header structure (`buf` is exactly intro + index + store).
pub fn check(buf: &[u8], what: &'static str) -> Result<(), HeaderError> {
    if buf.len() < INTRO || buf[..8] != MAGIC {
        return Err(HeaderError::Magic(what));
    }
    let (entries, store_len) = counts(buf);
    let index_end = INTRO as u64 + u64::from(entries) * ENTRY as u64;
    if entries == 0 || entries > MAX_ENTRIES || index_end + u64::from(store_len) != buf.len() as u64 {
        return Err(HeaderError::TooLarge { what, entries, store: store_len, limit: buf.len() });
    }
    let store = &buf[index_end as usize..];
    let len = store.len() as u64;
    // Pass 1: each entry on its own.
    let mut by_offset = Vec::with_capacity(entries as usize);
    for i in 0..entries {
        let at = INTRO + i as usize * ENTRY;
        let (tag, kind, offset, count) = (be32(buf, at), be32(buf, at + 4), be32(buf, at + 8), be32(buf, at + 12));
        let bad = |problem: String| HeaderError::Entry { what, index: i, tag, problem };
        if count == 0 {
            return Err(bad("count is 0".into()));
        }
        let offset = u64::from(offset);
        if offset >= len {
            return Err(bad(format!("offset {offset} is outside the {len}-byte store")));
        }
        match (item_size(kind), kind) {
            (Some(size), _) if offset % size != 0 => {
                return Err(bad(format!("offset {offset} is not aligned to {size}")));
            }
            (Some(_), _) => {}
            (None, 6) if count != 1 => return Err(bad(format!("a STRING entry has count {count}, not 1"))),
            (None, 6 | 8 | 9) => {}
            _ => return Err(bad(format!("unknown data type {kind}"))),
        }
        by_offset.push((offset, i, tag, kind, count));
    }
    // Pass 2, in offset order: an entry's data must end before the next entry's begins, as
    // rpm's own header check demands. Overlapping entries would let a small store stand for
    // many times its size (each entry is materialized apart), and scanning strings only up
    // to the next entry keeps the whole check linear in the store.
    by_offset.sort_unstable();
    let mut strings: u64 = 0;
    for (n, &(offset, i, tag, kind, count)) in by_offset.iter().enumerate() {
        let bad = |problem: String| HeaderError::Entry { what, index: i, tag, problem };
        let window = by_offset.get(n + 1).map_or(len, |next| next.0);
        match item_size(kind) {
            Some(size) => {
                let end = offset + u64::from(count) * size;
                if end > window {
                    return Err(bad(if window == len {
                        format!("{count} items of {size} bytes at offset {offset} run past the {len}-byte store")
                    } else {
                        format!("{count} items of {size} bytes at offset {offset} overlap the entry at offset {window}")
                    }));
                }
            }
            // STRING (one), STRING_ARRAY, I18NSTRING: `count` NUL-terminated strings.
            None => {
                strings += u64::from(count);
                if strings > MAX_STRINGS {
                    return Err(bad(format!("more than {MAX_STRINGS} strings in the {what}")));
                }
                if u64::from(count) > window - offset {
                    return Err(bad(format!("{count} strings cannot fit in the store after offset {offset}")));
                }
                let area = &store[offset as usize..window as usize];
                let mut pos = 0;
                for _ in 0..count {
                    match memchr::memchr(0, &area[pos..]) {
                        Some(nul) => pos += nul + 1,
                        None if window == len => {
                            return Err(bad("a string runs past the end of the store".into()));
                        }
                        None => return Err(bad(format!("a string overlaps the entry at offset {window}"))),
                    }
                }
            }
        }
    }
    Ok(())
}

/// Data types of the tags signet reads or rewrites in the signature header.
pub const SIGNATURE_TYPES: &[(u32, u32)] = &[
    (62, 7),   // HEADERSIGNATURES region: BIN
    (999, 7),  // RESERVED (v6 packages' reserved space): BIN
    (267, 7),  // DSAHEADER (also EdDSA): BIN
    (268, 7),  // RSAHEADER: BIN
    (269, 6),  // SHA1HEADER: STRING
    (270, 5),  // LONGSIZE: INT64
    (271, 5),  // LONGARCHIVESIZE: INT64
    (273, 6),  // SHA256HEADER: STRING
    (278, 8),  // OPENPGP: STRING_ARRAY
    (1000, 4), // SIZE: INT32
    (1002, 7), // PGP: BIN
    (1004, 7), // MD5: BIN
    (1005, 7), // GPG: BIN
    (1007, 4), // PAYLOADSIZE: INT32
    (1008, 7), // RESERVEDSPACE: BIN
];

/// Data types of the tags signet reads in the main header.
pub const HEADER_TYPES: &[(u32, u32)] = &[
    (63, 7),   // HEADERIMMUTABLE region: BIN
    (1000, 6), // NAME: STRING
    (1001, 6), // VERSION: STRING
    (1002, 6), // RELEASE: STRING
    (1022, 6), // ARCH: STRING
    (5092, 8), // PAYLOADDIGEST: STRING_ARRAY
    (5093, 4), // PAYLOADDIGESTALGO: INT32
    (5114, 4), // RPMFORMAT: INT32
];

/// Checks that the tags listed in `types` have their data type (a digest stored as a number
/// would otherwise be skipped, not checked).
pub fn check_types(buf: &[u8], what: &'static str, types: &[(u32, u32)]) -> Result<(), HeaderError> {
    let (entries, _) = counts(buf);
    for i in 0..entries {
        let at = INTRO + i as usize * ENTRY;
        let (tag, kind) = (be32(buf, at), be32(buf, at + 4));
        if let Some((_, want)) = types.iter().find(|(t, _)| *t == tag)
            && kind != *want
        {
            return Err(HeaderError::Entry {
                what,
                index: i,
                tag,
                problem: format!("data type {kind}, expected {want}"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with the given entries (tag, type, offset, count) and store.
    pub(crate) fn header(entries: &[(u32, u32, u32, u32)], store: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend((entries.len() as u32).to_be_bytes());
        b.extend((store.len() as u32).to_be_bytes());
        for (t, k, o, c) in entries {
            for v in [t, k, o, c] {
                b.extend(v.to_be_bytes());
            }
        }
        b.extend_from_slice(store);
        b
    }

    #[test]
    fn known_tags_must_have_their_type() {
        let h = header(&[(273, 4, 0, 1)], &[0; 4]);
        assert_eq!(check(&h, "signature header"), Ok(()));
        let err = check_types(&h, "signature header", SIGNATURE_TYPES).unwrap_err().to_string();
        assert!(err.contains("tag 273") && err.contains("expected 6"), "{err}");
    }

    #[test]
    fn accepts_well_formed_entries() {
        let store = b"abc\0\0\0\0\0\x00\x00\x00\x07x\0y\0";
        let h = header(&[(1000, 6, 0, 1), (1001, 4, 8, 1), (1002, 8, 12, 2)], store);
        assert_eq!(check(&h, "header"), Ok(()));
        assert_eq!(read(&mut &h[..], "header", MAX_HEADER).unwrap(), h);
    }

    #[test]
    fn rejects_absurd_counts_before_allocating() {
        // The defect of issue 8: INT64 x (2^32 - 1) in an 8-byte store.
        let h = header(&[(1000, 5, 0, u32::MAX)], &[0; 8]);
        assert!(matches!(check(&h, "header"), Err(HeaderError::Entry { .. })), "{:?}", check(&h, "header"));
        assert!(read(&mut &h[..], "header", MAX_HEADER).is_err());
    }

    #[test]
    fn rejects_each_kind_of_bad_entry() {
        type Case<'a> = (&'a [(u32, u32, u32, u32)], &'a [u8], &'a str);
        let cases: &[Case] = &[
            (&[(1, 4, 0, 0)], &[0; 4], "count is 0"),
            (&[(1, 4, 8, 1)], &[0; 8], "outside"),
            (&[(1, 4, 2, 1)], &[0; 8], "aligned"),
            (&[(1, 7, 4, 5)], &[0; 8], "run past"),
            (&[(1, 6, 0, 2)], b"a\0b\0", "not 1"),
            (&[(1, 6, 0, 1)], b"abcd", "past the end"),
            (&[(1, 8, 0, 3)], b"a\0b\0", "past the end"),
            (&[(1, 8, 0, 9)], b"a\0b\0", "cannot fit"),
            (&[(1, 7, 0, 4), (2, 7, 0, 4)], &[0; 4], "overlap"),
            (&[(1, 7, 0, 4), (2, 7, 2, 2)], &[0; 4], "overlap"),
            (&[(1, 8, 0, 1), (2, 7, 1, 2)], b"ab\0\0", "overlaps the entry"),
            (&[(1, 0, 0, 1)], &[0; 4], "unknown data type"),
            (&[(1, 10, 0, 1)], &[0; 4], "unknown data type"),
        ];
        for (entries, store, want) in cases {
            let err = check(&header(entries, store), "header").unwrap_err().to_string();
            assert!(err.contains(want), "{entries:?}: {err} (wanted {want:?})");
        }
    }

    #[test]
    fn truncated_and_oversized_headers_do_not_allocate_what_they_claim() {
        let mut intro = MAGIC.to_vec();
        intro.extend(1u32.to_be_bytes());
        intro.extend(0x0fff_0000u32.to_be_bytes());
        assert_eq!(
            read(&mut &intro[..], "header", MAX_HEADER).unwrap_err(),
            HeaderError::TooLarge { what: "header", entries: 1, store: 0x0fff_0000, limit: MAX_HEADER }
        );
        let mut small = MAGIC.to_vec();
        small.extend(1u32.to_be_bytes());
        small.extend(1000u32.to_be_bytes());
        small.extend([0; 20]);
        assert_eq!(read(&mut &small[..], "header", MAX_HEADER), Err(HeaderError::Truncated("header")));
    }
}
