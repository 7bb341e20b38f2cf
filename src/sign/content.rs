//! One key, one kind of signed data: recognises bytes that a package format would accept as
//! its signed data, so that no format can be used to sign another format's data.
//!
//! An OpenPGP signature does not say what it signs. An RPM header signature is a binary
//! signature over the header structure; a DEB `_gpgorigin` is one over `debian-binary` +
//! `control.tar.*` + `data.tar.*`; `Release.gpg` is one over the `Release` text. So a
//! detached signature over bytes chosen to be one of those *is* that package signature. Each
//! signer feeds the bytes it is about to sign through a [`Guard`] and refuses what looks
//! like another format's signed data:
//! - an RPM header structure: starts with the header magic `8e ad e8 01 00 00 00 00`;
//! - a DEB's signed members: starts with `2.` (dpkg accepts any `debian-binary` that does);
//! - an APT `Release`: text without NUL bytes in which a line starts with a hash list field
//!   (`SHA256:`, `SHA512:`, `SHA1:`, `MD5Sum:`, any case, blanks allowed before the colon as
//!   apt's parser allows them) — without one apt has nothing it could check an index against.
//!
//! Each format's own data is exactly one of these, so the three are disjoint, and a
//! `detached` signature is never any of them.

use super::rpmhdr;

/// A kind of data that a package format signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedData {
    RpmHeader,
    DebMembers,
    AptRelease,
}

impl SignedData {
    /// What a verifier would take a signature over such bytes for.
    pub fn describe(self) -> &'static str {
        match self {
            SignedData::RpmHeader => "an RPM header (its signature would be an RPM header signature)",
            SignedData::DebMembers => {
                "a DEB's signed members, debian-binary first (its signature would be a DEB _gpgorigin)"
            }
            SignedData::AptRelease => "an APT Release file (its signature would be a Release.gpg/InRelease)",
        }
    }
}

/// Field names of the hash lists apt reads from a Release file (compared lowercased). apt
/// allows blanks between a field name and its colon, so `SHA256 :` counts too.
const HASH_FIELDS: [&[u8]; 4] = [b"sha256", b"sha512", b"sha1", b"md5sum"];
/// Longest of them.
const LINE_PREFIX: usize = 6;

/// Where the current line is, for spotting a hash-list field at its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Reading the first characters (they may still be a hash field's name).
    Name,
    /// A hash field's name was read; blanks may follow, then the colon.
    Colon,
    /// Not a hash field: skip to the next line.
    Skip,
}

/// Watches a stream of bytes that is about to be signed.
#[derive(Debug, Clone)]
pub struct Guard {
    head: [u8; 8],
    head_len: usize,
    /// No NUL byte so far.
    text: bool,
    /// A hash list field opened a line.
    hash_field: bool,
    line: Line,
    /// The start of the current line, lowercased.
    name: [u8; LINE_PREFIX],
    name_len: usize,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            head: [0; 8],
            head_len: 0,
            text: true,
            hash_field: false,
            line: Line::Name,
            name: [0; LINE_PREFIX],
            name_len: 0,
        }
    }
}

impl Guard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        let take = (self.head.len() - self.head_len).min(bytes.len());
        self.head[self.head_len..self.head_len + take].copy_from_slice(&bytes[..take]);
        self.head_len += take;
        if !self.text {
            return;
        }
        if memchr::memchr(0, bytes).is_some() {
            // Binary: cannot be a Release, and nothing else here looks past the head.
            self.text = false;
            return;
        }
        let mut i = 0;
        while i < bytes.len() && !self.hash_field {
            let b = bytes[i];
            if self.line == Line::Skip {
                match memchr::memchr(b'\n', &bytes[i..]) {
                    Some(k) => {
                        i += k + 1;
                        self.new_line();
                    }
                    None => return,
                }
                continue;
            }
            i += 1;
            if b == b'\n' {
                self.new_line();
                continue;
            }
            match self.line {
                Line::Name => {
                    self.name[self.name_len] = b.to_ascii_lowercase();
                    self.name_len += 1;
                    let name = &self.name[..self.name_len];
                    if HASH_FIELDS.contains(&name) {
                        self.line = Line::Colon;
                    } else if !HASH_FIELDS.iter().any(|f| f.starts_with(name)) {
                        self.line = Line::Skip;
                    }
                }
                Line::Colon => match b {
                    b':' => self.hash_field = true,
                    b' ' | b'\t' | b'\r' => {}
                    _ => self.line = Line::Skip,
                },
                Line::Skip => unreachable!("handled above"),
            }
        }
    }

    fn new_line(&mut self) {
        self.line = Line::Name;
        self.name_len = 0;
    }

    /// Whether the bytes seen so far could be read by apt as a `Release` file.
    pub fn release_like(&self) -> bool {
        self.text && self.hash_field
    }

    /// What package-signed data the bytes seen so far are, if any.
    pub fn finish(&self) -> Option<SignedData> {
        let head = &self.head[..self.head_len];
        if head == rpmhdr::MAGIC {
            Some(SignedData::RpmHeader)
        } else if head.starts_with(b"2.") {
            Some(SignedData::DebMembers)
        } else if self.release_like() {
            Some(SignedData::AptRelease)
        } else {
            None
        }
    }
}

/// Classifies a whole buffer.
pub fn classify(bytes: &[u8]) -> Option<SignedData> {
    let mut g = Guard::new();
    g.update(bytes);
    g.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_each_kind_of_package_signed_data() {
        assert_eq!(classify(&rpmhdr::MAGIC), Some(SignedData::RpmHeader));
        assert_eq!(classify(b"2.0\n\x1f\x8b\x08"), Some(SignedData::DebMembers));
        assert_eq!(classify(b"Origin: x\nSHA256:\n abc 1 main/Packages\n"), Some(SignedData::AptRelease));
        assert_eq!(classify(b"# comment\r\nsha256:\r\n"), Some(SignedData::AptRelease));
        assert_eq!(classify(b"Date: x\nMD5Sum:\n"), Some(SignedData::AptRelease));
        // apt takes blanks between a field name and its colon.
        assert_eq!(classify(b"Origin: x\nSHA256 :\n"), Some(SignedData::AptRelease));
        assert_eq!(classify(b"Origin: x\nsha512\t \t:\n"), Some(SignedData::AptRelease));
        assert_eq!(classify(b"Origin: x\nSHA1:"), Some(SignedData::AptRelease));
    }

    #[test]
    fn ordinary_files_are_not_package_data() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"\x1f\x8b\x08\x00"), None);
        assert_eq!(classify(b"<?xml version=\"1.0\"?>\n<repomd/>\n"), None);
        assert_eq!(classify(b"0123abcd  hello.rpm\n"), None);
        // A tarball that contains a Release file has NUL bytes: it is not one.
        assert_eq!(classify(b"ustar\0\0\nSHA256:\n"), None);
        // The field must open a line, and be one of the hash lists.
        assert_eq!(classify(b"see SHA256: below\n"), None);
        assert_eq!(classify(b"SHA2567: x\nSHA1x:\nsha 256:\n"), None);
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let text = b"Origin: Debian\nLabel: x\nSHA256:\n 00 1 main/binary-amd64/Packages\n";
        for split in 0..text.len() {
            let mut g = Guard::new();
            g.update(&text[..split]);
            g.update(&text[split..]);
            assert_eq!(g.finish(), Some(SignedData::AptRelease), "split at {split}");
        }
        let mut g = Guard::new();
        for b in rpmhdr::MAGIC {
            g.update(&[b]);
        }
        assert_eq!(g.finish(), Some(SignedData::RpmHeader));
    }
}
