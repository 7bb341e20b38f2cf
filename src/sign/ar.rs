//! A strict, streaming reader of the ar archives that DEB packages are.
//!
//! deb(5) allows only the common ar format with short member names (no GNU `/NNN` or BSD
//! `#1/NNN` long-name references, no symbol tables). The `ar` crate's reader accepts those
//! and panics on a hostile one (`/999` without a name table indexes out of range), so DEBs
//! are read here instead: every header field is checked before it is used, sizes are
//! decimal, member data is streamed and never buffered. Archives are still written with
//! the `ar` crate's `Builder`, which only ever sees headers this reader accepted.

use std::io::{self, Read};

/// The global header of an ar archive.
pub const MAGIC: &[u8; 8] = b"!<arch>\n";
const HEADER: usize = 60;
/// Largest member signet accepts (the size field has 10 decimal digits; this is the limit
/// documented for artifacts, applied to each member).
pub const MAX_MEMBER: u64 = 8 * 1024 * 1024 * 1024;

/// A member header, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHeader {
    /// The name without ar's trailing `/` and padding.
    pub name: String,
    pub mtime: u64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub size: u64,
}

impl MemberHeader {
    /// The same header for the `ar` crate's writer.
    pub fn to_ar(&self) -> ar::Header {
        let mut h = ar::Header::new(self.name.as_bytes().to_vec(), self.size);
        h.set_mtime(self.mtime);
        h.set_uid(self.uid);
        h.set_gid(self.gid);
        h.set_mode(self.mode);
        h
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A numeric header field: digits in `radix`, left-aligned, padded with spaces; empty is 0
/// (dpkg writes empty uid/gid fields for some members).
fn number(field: &[u8], radix: u32, what: &str) -> io::Result<u64> {
    let text = std::str::from_utf8(field).map_err(|_| invalid(format!("ar member {what} is not text")))?;
    let digits = text.trim_end_matches(' ');
    if digits.is_empty() {
        return Ok(0);
    }
    if !digits.bytes().all(|b| (b as char).is_digit(radix)) {
        return Err(invalid(format!("ar member {what} {text:?} is not a base-{radix} number")));
    }
    u64::from_str_radix(digits, radix).map_err(|_| invalid(format!("ar member {what} {text:?} is out of range")))
}

/// Parses and checks one 60-byte member header.
pub fn parse_header(h: &[u8; HEADER]) -> io::Result<MemberHeader> {
    if &h[58..60] != b"`\n" {
        return Err(invalid("ar member header has no end marker (archive corrupt or truncated)"));
    }
    let raw = &h[..16];
    let trimmed = {
        let end = raw.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
        &raw[..end]
    };
    if trimmed.first() == Some(&b'/') || trimmed.starts_with(b"#1/") {
        return Err(invalid(format!(
            "ar member name {:?} is an extended-name reference or symbol table, which DEBs do not use",
            String::from_utf8_lossy(trimmed)
        )));
    }
    let name = trimmed.strip_suffix(b"/").unwrap_or(trimmed);
    let name = std::str::from_utf8(name).map_err(|_| invalid("ar member name is not text"))?;
    if name.is_empty() || name.contains('/') || name.chars().any(|c| c.is_control() || c == ' ') {
        return Err(invalid(format!("ar member name {name:?} is not a plain file name")));
    }
    let size = number(&h[48..58], 10, "size")?;
    if size > MAX_MEMBER {
        return Err(invalid(format!("ar member {name:?} claims {size} bytes (limit {MAX_MEMBER})")));
    }
    let small = |v: u64, what: &str| u32::try_from(v).map_err(|_| invalid(format!("ar member {what} out of range")));
    Ok(MemberHeader {
        name: name.to_owned(),
        mtime: number(&h[16..28], 10, "mtime")?,
        uid: small(number(&h[28..34], 10, "uid")?, "uid")?,
        gid: small(number(&h[34..40], 10, "gid")?, "gid")?,
        mode: small(number(&h[40..48], 8, "mode")?, "mode")?,
        size,
    })
}

/// Reads members one after another; the reader itself reads the current member's data.
pub struct Reader<R> {
    inner: R,
    /// Bytes of the current member not read yet.
    left: u64,
    /// Whether the current member is followed by a padding byte (odd size).
    pad: bool,
}

impl<R: Read> Reader<R> {
    /// Checks the global header.
    pub fn new(mut inner: R) -> io::Result<Self> {
        let mut magic = [0u8; 8];
        inner.read_exact(&mut magic).map_err(|e| eof_is_invalid(e, "ar global header"))?;
        if &magic != MAGIC {
            return Err(invalid("not an ar archive"));
        }
        Ok(Reader { inner, left: 0, pad: false })
    }

    /// Skips what is left of the current member and reads the next header; `None` at a
    /// clean end of the archive.
    pub fn next_member(&mut self) -> io::Result<Option<MemberHeader>> {
        let skip = self.left + u64::from(self.pad);
        let skipped = io::copy(&mut (&mut self.inner).take(skip), &mut io::sink())?;
        if skipped < skip {
            return Err(invalid("ar member data runs past the end of the archive"));
        }
        self.left = 0;
        self.pad = false;
        let mut h = [0u8; HEADER];
        let mut n = 0;
        while n < HEADER {
            match self.inner.read(&mut h[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        match n {
            0 => return Ok(None),
            HEADER => {}
            _ => return Err(invalid("archive ends inside an ar member header")),
        }
        let header = parse_header(&h)?;
        self.left = header.size;
        self.pad = header.size % 2 == 1;
        Ok(Some(header))
    }
}

fn eof_is_invalid(e: io::Error, what: &str) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof { invalid(format!("archive ends inside the {what}")) } else { e }
}

impl<R: Read> Read for Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(invalid("ar member data runs past the end of the archive"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: &str) -> [u8; HEADER] {
        let mut h = [b' '; HEADER];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[16] = b'0';
        h[40..43].copy_from_slice(b"644");
        h[48..48 + size.len()].copy_from_slice(size.as_bytes());
        h[58..].copy_from_slice(b"`\n");
        h
    }

    #[test]
    fn reads_members_with_padding() {
        let mut a = MAGIC.to_vec();
        a.extend(header("debian-binary", "4"));
        a.extend(b"2.0\n");
        a.extend(header("x/", "3"));
        a.extend(b"abc\n");
        let mut r = Reader::new(&a[..]).unwrap();
        let m = r.next_member().unwrap().unwrap();
        assert_eq!((m.name.as_str(), m.size, m.mode), ("debian-binary", 4, 0o644));
        let mut body = String::new();
        r.read_to_string(&mut body).unwrap();
        assert_eq!(body, "2.0\n");
        assert_eq!(r.next_member().unwrap().unwrap().name, "x");
        assert_eq!(r.next_member().unwrap(), None);
    }

    #[test]
    fn rejects_hostile_headers_without_panicking() {
        for (name, size, want) in [
            ("/999", "4", "extended-name"),
            ("//", "4", "extended-name"),
            ("#1/20", "4", "extended-name"),
            ("/", "4", "extended-name"),
            ("a/b", "4", "plain file name"),
            ("debian-binary", "12x", "not a base-10"),
            ("debian-binary", "-1", "not a base-10"),
            ("debian-binary", "9999999999", "limit"),
        ] {
            let err = parse_header(&header(name, size)).unwrap_err().to_string();
            assert!(err.contains(want), "{name} {size}: {err}");
        }
        let mut no_marker = header("a", "1");
        no_marker[58] = b'x';
        assert!(parse_header(&no_marker).is_err());
    }

    #[test]
    fn truncation_is_an_error_not_a_clean_end() {
        let mut a = MAGIC.to_vec();
        a.extend(header("debian-binary", "40"));
        a.extend(b"2.0\n");
        let mut r = Reader::new(&a[..]).unwrap();
        r.next_member().unwrap();
        assert!(io::copy(&mut r, &mut io::sink()).is_err());
        let mut partial = MAGIC.to_vec();
        partial.extend(&header("a", "1")[..30]);
        assert!(Reader::new(&partial[..]).unwrap().next_member().is_err());
    }
}
