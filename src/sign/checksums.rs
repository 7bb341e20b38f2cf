//! `SHA256SUMS` in the format `sha256sum -c` reads: `HEX  NAME` lines, sorted by name.

use super::SignError;

/// One line of a checksum list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub sha256: String,
    pub name: String,
}

/// Renders entries sorted by name. Names were validated (no newline, no backslash).
pub fn render(entries: &[Entry]) -> String {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted.iter().map(|e| format!("{}  {}\n", e.sha256, e.name)).collect()
}

/// Parses a checksum list (text or binary mode markers).
pub fn parse(text: &str) -> Result<Vec<Entry>, SignError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (hex, rest) = line
                .split_once(' ')
                .ok_or_else(|| SignError::Invalid(format!("malformed SHA256SUMS line {line:?}")))?;
            let name = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*')).unwrap_or(rest);
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(SignError::Invalid(format!("malformed SHA256SUMS line {line:?}")));
            }
            Ok(Entry { sha256: hex.to_ascii_lowercase(), name: name.to_owned() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_it_parses_sorted() {
        let a = Entry { sha256: "a".repeat(64), name: "z.rpm".into() };
        let b = Entry { sha256: "b".repeat(64), name: "a.deb".into() };
        let text = render(&[a.clone(), b.clone()]);
        assert_eq!(text, format!("{}  a.deb\n{}  z.rpm\n", "b".repeat(64), "a".repeat(64)));
        assert_eq!(parse(&text).unwrap(), vec![b, a]);
        assert!(parse("nothex  x\n").is_err());
    }
}
