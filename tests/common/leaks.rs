//! Looking for a secret in output: every spelling of it (raw bytes, hex, HEX, base64) and,
//! for long secrets, every window of those (wrapped or partly printed output), so a test that
//! says "the key is in no output" looks for more than one spelling on one stream.
#![allow(dead_code)]

use base64::Engine as _;

/// `n` random bytes from the kernel.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut f = std::fs::File::open("/dev/urandom").expect("urandom");
    let mut v = vec![0u8; n];
    std::io::Read::read_exact(&mut f, &mut v).expect("random");
    v
}

/// Named spellings of a secret.
pub type Spellings = Vec<(String, Vec<u8>)>;

/// Every spelling of a secret that must not appear, and for long secrets every 40-character
/// window of its hex and base64 spellings (catching wrapped output), and every 24-byte
/// window of its raw bytes.
pub fn needles(secret: &[u8]) -> (Spellings, Spellings) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    let hx = hex::encode(secret);
    let whole = vec![
        ("raw".to_string(), secret.to_vec()),
        ("hex".to_string(), hx.clone().into_bytes()),
        ("HEX".to_string(), hex::encode_upper(secret).into_bytes()),
        ("base64".to_string(), b64.clone().into_bytes()),
    ];
    let mut parts = Vec::new();
    if secret.len() >= 64 {
        for (name, form) in [("hex", &hx), ("base64", &b64)] {
            for (i, w) in form.as_bytes().windows(40).enumerate() {
                parts.push((format!("{name}[{i}..{}]", i + 40), w.to_vec()));
            }
        }
        for (i, w) in secret.windows(24).enumerate() {
            parts.push((format!("raw[{i}..{}]", i + 24), w.to_vec()));
        }
    }
    (whole, parts)
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn assert_clean(what: &str, hay: &[u8], secrets: &[(&str, &[u8])]) {
    let show = |at: usize, len: usize| {
        let from = at.saturating_sub(200);
        let to = (at + len + 100).min(hay.len());
        String::from_utf8_lossy(&hay[from..to]).into_owned()
    };
    for (name, s) in secrets {
        let (whole, parts) = needles(s);
        for (form, n) in whole {
            if let Some(at) = find(hay, &n) {
                panic!(
                    "{what}: the {name} ({form}) leaked at byte {at}:\n{}",
                    show(at, n.len())
                );
            }
        }
        // Windows: one pass over the output per window length, looked up in a set.
        let mut by_len: std::collections::HashMap<usize, std::collections::HashMap<&[u8], &str>> =
            Default::default();
        for (form, n) in &parts {
            by_len
                .entry(n.len())
                .or_default()
                .insert(n.as_slice(), form.as_str());
        }
        for (len, set) in by_len {
            for (at, w) in hay.windows(len).enumerate() {
                if let Some(form) = set.get(w) {
                    panic!(
                        "{what}: the {name} ({form}) leaked at byte {at}:\n{}",
                        show(at, len)
                    );
                }
            }
        }
    }
}
