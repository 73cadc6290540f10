//! Names as people read and type them. File names are bytes; a listing,
//! a `--json` document or a terminal wants text. A name is shown as itself
//! where it is printable UTF-8; every byte that is not (invalid UTF-8,
//! control characters) is shown as `\xHH`, and a backslash as `\\`. What
//! is shown can be typed back: [`unescape`] turns `\xHH` and `\\` into the
//! bytes they stand for and leaves any other backslash alone, so a name is
//! never shown with replacement characters and never read back wrong.

use std::ffi::{OsStr, OsString};
use std::fmt::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// `bytes` as printable text that [`unescape`] reads back to the same bytes.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => c.encode_utf8(&mut [0; 4]).bytes().for_each(|b| hex(&mut out, b)),
                c => out.push(c),
            }
        }
        chunk.invalid().iter().for_each(|b| hex(&mut out, *b));
    }
    out
}

fn hex(out: &mut String, byte: u8) {
    let _ = write!(out, "\\x{byte:02x}");
}

/// A path for people: [`escape`] of its bytes.
pub fn show(path: &Path) -> String {
    escape(path.as_os_str().as_bytes())
}

/// The bytes that `text` (as [`escape`] shows names) stands for.
pub fn unescape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let byte = match &text[i..] {
            [b'\\', b'\\', ..] => Some((b'\\', 2)),
            [b'\\', b'x', hi, lo, ..] => std::str::from_utf8(&[*hi, *lo])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .map(|b| (b, 4)),
            _ => None,
        };
        let (b, len) = byte.unwrap_or((text[i], 1));
        out.push(b);
        i += len;
    }
    out
}

/// A path given on the command line, with escapes read back.
pub fn path_arg(arg: &OsStr) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(arg.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_shows_printably_and_reads_back_to_its_bytes() {
        let names: [&[u8]; 7] = [
            b"plain.txt",
            "caf\u{e9} \u{1F600}".as_bytes(),
            b"bad\xff\xfe",
            b"back\\slash",
            b"new\nline",
            b"\\x41",
            b"",
        ];
        for name in names {
            let shown = escape(name);
            assert!(!shown.contains('\u{fffd}') && !shown.chars().any(char::is_control), "{shown}");
            assert_eq!(unescape(shown.as_bytes()), name, "{shown}");
        }
        assert_eq!(escape(b"bad\xff"), "bad\\xff");
        assert_eq!(escape(b"a\\b"), "a\\\\b");
    }

    #[test]
    fn backslashes_that_are_no_escape_stay_as_typed() {
        assert_eq!(unescape(br"C:\temp\xyz"), br"C:\temp\xyz");
        assert_eq!(unescape(br"\x4"), br"\x4");
        assert_eq!(unescape(br"\x41\x4A"), b"AJ");
    }
}
