//! Secrets: values that must never reach any output, and the redactor that enforces it.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::sync::{Arc, RwLock};

/// A secret value inside a recipe: usable as file content, never printable.
#[derive(Clone)]
pub struct Secret(pub Arc<Vec<u8>>);

impl Secret {
    pub fn describe(&self) -> String {
        describe_bytes(&self.0)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// "<secret: 1024 bytes, sha256 ab12cd34…>": what output shows instead of a secret.
pub fn describe_bytes(b: &[u8]) -> String {
    let h = hex::encode(Sha256::digest(b));
    format!("<secret: {} bytes, sha256 {}>", b.len(), &h[..16])
}

/// The placeholder text of a secret inside `bytes`, if any: `<secret: N bytes, sha256 X>`
/// (what a secret turns into when made text: `${s}`, `to_string`) or `<secret: hidden>`.
/// Such text must never reach a host in place of the secret.
pub fn placeholder_in(bytes: &[u8]) -> Option<String> {
    const OPEN: &[u8] = b"<secret: ";
    for at in memchr::memmem::find_iter(bytes, OPEN) {
        let rest = &bytes[at + OPEN.len()..];
        if rest.starts_with(b"hidden>") {
            return Some(crate::vars::HIDDEN.to_string());
        }
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let rest2 = &rest[digits..];
        const MID: &[u8] = b" bytes, sha256 ";
        if digits == 0 || !rest2.starts_with(MID) {
            continue;
        }
        let hexpart = &rest2[MID.len()..];
        if hexpart.len() > 16
            && hexpart[..16].iter().all(|b| b.is_ascii_hexdigit())
            && hexpart[16] == b'>'
        {
            let len = OPEN.len() + digits + MID.len() + 17;
            return Some(String::from_utf8_lossy(&bytes[at..at + len]).into_owned());
        }
    }
    None
}

/// Refuses text bound for a host that holds a secret's placeholder instead of the secret.
pub fn refuse_placeholder(what: &str, bytes: &[u8]) -> Result<(), String> {
    match placeholder_in(bytes) {
        None => Ok(()),
        Some(p) => Err(format!(
            "{what} holds the placeholder {p} where a secret was meant: the secret was turned \
             into text (`${{...}}` interpolation, to_string, print, or a string function), and \
             a host never gets that text. Join a secret with `+` instead (`\"password=\" + s` is \
             a secret too, written as the real bytes), or pass it in a template's `vars`"
        )),
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A spelling of a secret and what replaces it.
type Needle = (Vec<u8>, String);

/// Every secret seen in this run; all output passes through [`Redactor::redact`].
#[derive(Clone, Default)]
pub struct Redactor {
    needles: Arc<RwLock<Vec<Needle>>>,
}

impl Redactor {
    /// Remembers a secret in its raw, hex and base64 spellings (and each
    /// non-trivial line of it, since command output may split it).
    pub fn add(&self, secret: &[u8]) {
        let mut forms: Vec<Vec<u8>> = Vec::new();
        let mut push = |v: Vec<u8>| {
            if v.len() >= 6 && !forms.contains(&v) {
                forms.push(v);
            }
        };
        push(secret.to_vec());
        push(String::from_utf8_lossy(secret).into_owned().into_bytes());
        push(hex::encode(secret).into_bytes());
        push(hex::encode_upper(secret).into_bytes());
        push(
            base64::engine::general_purpose::STANDARD
                .encode(secret)
                .into_bytes(),
        );
        // Wrapped spellings, one needle per line: base64 at 76 columns (coreutils) and 64
        // (PEM, openssl), hex at 60 (xxd -p) and 64.
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let hx = hex::encode(secret);
        for (form, width) in [(&b64, 76), (&b64, 64), (&hx, 60), (&hx, 64)] {
            if form.len() > width {
                for chunk in form.as_bytes().chunks(width).filter(|c| c.len() >= 16) {
                    push(chunk.to_vec());
                }
            }
        }
        let trimmed = secret.strip_suffix(b"\n").unwrap_or(secret);
        push(trimmed.to_vec());
        for line in trimmed.split(|b| *b == b'\n') {
            if line.len() >= 12 {
                push(line.to_vec());
            }
        }
        let label = describe_bytes(secret);
        if let Ok(mut n) = self.needles.write() {
            for f in forms {
                if !n.iter().any(|(x, _)| *x == f) {
                    n.push((f, label.clone()));
                }
            }
            // Longest first, so a secret is replaced before its parts.
            n.sort_by_key(|(x, _)| std::cmp::Reverse(x.len()));
        }
    }

    /// Whether `bytes` hold any known secret (in any of its spellings).
    pub fn found_in(&self, bytes: &[u8]) -> bool {
        let Ok(needles) = self.needles.read() else {
            return true;
        };
        needles
            .iter()
            .any(|(n, _)| !n.is_empty() && bytes.windows(n.len()).any(|w| w == n.as_slice()))
    }

    /// Replaces every known secret in `text`.
    pub fn redact(&self, text: &str) -> String {
        let Ok(needles) = self.needles.read() else {
            return text.to_string();
        };
        if needles.is_empty() {
            return text.to_string();
        }
        let mut out = text.as_bytes().to_vec();
        for (needle, label) in needles.iter() {
            out = replace_all(&out, needle, label.as_bytes());
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() || hay.len() < needle.len() {
        return hay.to_vec();
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_raw_hex_and_base64() {
        let r = Redactor::default();
        let s = b"\x01\x02supersecretkeymaterial\xff";
        r.add(s);
        let raw = String::from_utf8_lossy(s).into_owned();
        for text in [
            format!("a {} b", hex::encode(s)),
            format!(
                "a {} b",
                base64::engine::general_purpose::STANDARD.encode(s)
            ),
            format!("plain {raw}"),
        ] {
            let out = r.redact(&text);
            assert!(!out.contains(&hex::encode(s)), "{out}");
            assert!(!out.contains(&raw), "{out}");
            assert!(out.contains("<secret:"), "{out}");
        }
    }

    #[test]
    fn placeholders_are_found() {
        let p = describe_bytes(b"hunter2");
        assert_eq!(placeholder_in(format!("pw={p}\n").as_bytes()), Some(p));
        assert!(placeholder_in(b"x <secret: hidden> y").is_some());
        assert!(placeholder_in(b"<secret: 3 bytes, sha256 0123>").is_none());
        assert!(placeholder_in(b"<secret: many> <secret: bytes").is_none());
        assert!(refuse_placeholder("command", b"echo hi").is_ok());
    }

    #[test]
    fn short_values_are_not_needles() {
        let r = Redactor::default();
        r.add(b"ab");
        assert_eq!(r.redact("abab"), "abab");
    }
}
