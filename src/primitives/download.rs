//! `download` on a host that has neither curl nor wget: the controller fetches the URL once
//! per run (its own curl or wget) and streams the file to each such host, where size and
//! sha256 are checked before it replaces the destination.

use super::files::write_script_checked;
use super::{in_c_locale, Attrs, StepError, StepPlan};
use crate::context::HostCtx;
use crate::planned::{PlannedContent, PlannedFile};
use crate::transport::{local::LocalSpawner, quote, Connection, Stats, TransportError};
use sha2::{Digest, Sha256, Sha512};
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The host's own fetcher, asked only when a download is due (one round trip): `true` when
/// curl or wget is on its PATH.
pub fn host_can_fetch(h: &HostCtx) -> Result<bool, super::StepError> {
    let out = super::check(
        h,
        "command -v curl >/dev/null 2>&1 || command -v wget >/dev/null 2>&1 || echo none",
    )?;
    if out.status != 0 {
        return Err(super::StepError::command(&out));
    }
    Ok(out.stdout_str().trim() != "none")
}

/// A URL fetched on the controller: where it is, its size, sha256 and sha512.
#[derive(Debug, Clone)]
struct Fetched {
    path: PathBuf,
    size: u64,
    sha256: String,
    sha512: String,
}

impl Fetched {
    /// Its checksum in the algorithm `a`.
    fn sum(&self, a: Algo) -> &str {
        match a {
            Algo::Sha256 => &self.sha256,
            Algo::Sha512 => &self.sha512,
        }
    }
}

/// One URL's fetch: empty until the first host that needs it has fetched it.
type Slot = Arc<Mutex<Option<Result<Fetched, String>>>>;

/// The run's controller-side downloads: each URL is fetched once, whatever the number of
/// hosts that need it; the folder goes when the run ends.
#[derive(Default)]
pub struct Cache {
    dir: Mutex<Option<PathBuf>>,
    urls: Mutex<HashMap<String, Slot>>,
    /// Unverified downloads already warned about in this run (one line each, not per host).
    warned: Mutex<std::collections::HashSet<(String, String)>>,
}

impl Drop for Cache {
    fn drop(&mut self) {
        if let Some(d) = self.dir.lock().ok().and_then(|mut d| d.take()) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Cache {
    /// `true` the first time this run asks about `url` to `dest`.
    pub fn first_warning(&self, url: &str, dest: &str) -> bool {
        self.warned
            .lock()
            .map(|mut w| w.insert((url.to_string(), dest.to_string())))
            .unwrap_or(true)
    }

    fn folder(&self) -> Result<PathBuf, String> {
        let mut d = self.dir.lock().map_err(|_| "download cache poisoned")?;
        if let Some(p) = d.as_ref() {
            return Ok(p.clone());
        }
        let p = std::env::temp_dir().join(format!("recipe-download-{}", std::process::id()));
        std::fs::create_dir_all(&p)
            .map_err(|e| format!("cannot create {} on the controller: {e}", p.display()))?;
        *d = Some(p.clone());
        Ok(p)
    }

    /// The file at `url`, fetched here the first time it is asked for.
    fn get(&self, url: &str, timeout: Duration) -> Result<Fetched, String> {
        let slot = {
            let mut m = self.urls.lock().map_err(|_| "download cache poisoned")?;
            m.entry(url.to_string()).or_default().clone()
        };
        let mut s = slot.lock().map_err(|_| "download cache poisoned")?;
        if let Some(r) = s.as_ref() {
            return r.clone();
        }
        let n = self.urls.lock().map(|m| m.len()).unwrap_or(0);
        let r = self
            .folder()
            .and_then(|d| fetch_here(url, &d.join(format!("{n}.part")), timeout));
        *s = Some(r.clone());
        r
    }
}

/// Fetches `url` into `dest` with this machine's curl (or wget).
fn fetch_here(url: &str, dest: &std::path::Path, timeout: Duration) -> Result<Fetched, String> {
    let secs = timeout.as_secs().max(1).to_string();
    let d = dest.to_string_lossy().to_string();
    let tries: [(&str, Vec<&str>); 2] = [
        (
            "curl",
            vec![
                "-fsSL",
                "--retry",
                "3",
                "--max-time",
                &secs,
                "-o",
                &d,
                "--",
                url,
            ],
        ),
        ("wget", vec!["-q", "-T", &secs, "-O", &d, "--", url]),
    ];
    let mut tried = false;
    for (tool, args) in tries {
        let out = match std::process::Command::new(tool).args(&args).output() {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot run {tool} on the controller: {e}")),
        };
        tried = true;
        if !out.status.success() {
            let _ = std::fs::remove_file(dest);
            return Err(format!(
                "{tool} on the controller could not fetch {url} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        break;
    }
    if !tried {
        return Err(format!(
            "the host has neither curl nor wget, and neither has the controller: install one \
             of them on either (packages([\"curl\"]) before this step) to download {url}"
        ));
    }
    let (size, sha256, sha512) = sum_file(dest)?;
    Ok(Fetched {
        path: dest.to_path_buf(),
        size,
        sha256,
        sha512,
    })
}

/// Size, sha256 and sha512 of a file, read once.
fn sum_file(p: &std::path::Path) -> Result<(u64, String, String), String> {
    let mut f = std::fs::File::open(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    let (mut h, mut h512) = (Sha256::new(), Sha512::new());
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
        h512.update(&buf[..n]);
    }
    Ok((
        size,
        hex::encode(h.finalize()),
        hex::encode(h512.finalize()),
    ))
}

/// Whether `tool` is a file on this machine's PATH.
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Neither the host nor the controller can fetch: said before anything runs (dry runs too).
pub fn controller_can_fetch(url: &str) -> Result<(), String> {
    if on_path("curl") || on_path("wget") {
        return Ok(());
    }
    Err(format!(
        "the host has neither curl nor wget, and neither has the controller: install one \
         of them on either (packages([\"curl\"]) before this step) to download {url}"
    ))
}

/// The change line of a download the controller makes for this host.
pub fn change_line(url: &str, host: &str) -> String {
    format!(
        "download {url} (on the controller: {host} has neither curl nor wget; streamed to {host})"
    )
}

/// The plan of a download the controller makes and streams to this host: `want` is checked
/// on the controller, then size and sha256 again on the host before the rename.
pub fn via_controller<'a>(
    url: &'a str,
    dest: &'a str,
    want: Option<Want>,
    pin: Option<String>,
    attrs: &'a Attrs,
    timeout: Duration,
    host: &str,
) -> StepPlan<'a> {
    let mut plan = StepPlan::work(false, move |h| {
        let f = h.run.downloads.get(url, timeout)?;
        if let Some(w) = &want {
            if f.sum(w.algo) != w.hex {
                return Err(format!(
                    "checksum mismatch: {url} (fetched on the controller) has {a} {}, expected {}{}",
                    f.sum(w.algo),
                    w.hex,
                    pin_hint(pin.as_deref(), w.algo),
                    a = w.algo.name()
                )
                .into());
            }
        }
        let size = usize::try_from(f.size).map_err(|_| "file too big".to_string())?;
        let script = write_script_checked(dest, attrs, false, Some((size, &f.sha256)));
        let local = Connection::new(Box::new(LocalSpawner), 1, Arc::new(Stats::default()));
        let src = format!("cat -- {}", quote(&f.path.to_string_lossy()));
        let dst = in_c_locale(&script);
        if let Some(m) = crate::context::step_meter() {
            m.set_total(f.size);
        }
        let fut = Box::pin(crate::context::metered(crate::transport::pipe(
            &local,
            &src,
            &h.conn,
            &dst,
            Some(timeout),
        )));
        let limit = timeout + Duration::from_secs(15);
        let (a, b) = h
            .run
            .rt
            .block_on(async { tokio::time::timeout(limit, fut).await })
            .map_err(|_| {
                StepError::from(TransportError::Timeout(format!(
                    "no answer within {}s",
                    limit.as_secs()
                )))
                .doing(format!("sending {url} to the host"))
            })?;
        let b = b.map_err(|e| StepError::from(e).doing(format!("sending {url} to the host")))?;
        if b.status != 0 {
            return Err(StepError::command(&b));
        }
        a.map_err(|e| StepError::from(e).doing(format!("reading the controller's copy of {url}")))?;
        Ok(rhai::Map::new())
    });
    plan.changes = vec![change_line(url, host)];
    plan.writes(dest, PlannedFile::new(PlannedContent::Unknown, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_file_in_chunks() {
        let d = std::env::temp_dir().join(format!("recipe-sum-test-{}", std::process::id()));
        std::fs::write(&d, vec![7u8; 200_000]).unwrap();
        let (n, s, s512) = sum_file(&d).unwrap();
        let _ = std::fs::remove_file(&d);
        assert_eq!(n, 200_000);
        assert_eq!(s, hex::encode(Sha256::digest(vec![7u8; 200_000])));
        assert_eq!(s512, hex::encode(Sha512::digest(vec![7u8; 200_000])));
    }

    #[test]
    fn the_change_says_which_way() {
        let c = change_line("http://m/x.deb", "w1");
        assert!(
            c.contains("on the controller") && c.contains("streamed to w1"),
            "{c}"
        );
    }
}

// ---- The `download` step: the host fetches (curl or wget), or the controller does (above).

use super::files::{plan_content, probe_file, ContentPlan};
use super::{attr_fixes, FileKind, StatInfo, StepResult};
use rhai::{Dynamic, EvalAltResult, NativeCallContext};

crate::primitives::options::options! {
    /// Options of `download`.
    pub struct DownloadOpts for "download" {
        sha256: Option<String>,
        sha512: Option<String>,
        verify: Option<bool>,
        pin: Option<String>,
        timeout: Option<u64>,
        ..attrs: Attrs
    }
}

/// The `sha256` value a site writes to take a file unchecked (the same as `verify: false`).
pub const UNVERIFIED: &str = "unverified";

/// A checksum algorithm `download` checks with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    Sha256,
    Sha512,
}

impl Algo {
    /// Its option name (and the word messages use).
    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }
    /// Hex digits of one checksum.
    fn len(self) -> usize {
        match self {
            Algo::Sha256 => 64,
            Algo::Sha512 => 128,
        }
    }
}

/// The checksum a download must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub algo: Algo,
    /// Lower-case hex.
    pub hex: String,
}

/// What a download is checked against: `Ok(Some(want))`, `Ok(None)` when the recipe or the
/// site said so explicitly (`verify: false`, or `"unverified"`), else the refusal, made
/// before anything is fetched. `sha512` (some publishers sign only that) replaces `sha256`.
pub fn expected(url: &str, o: &DownloadOpts) -> Result<Option<Want>, String> {
    let norm = |v: &Option<String>| {
        v.as_deref()
            .map(|s| s.trim().to_ascii_lowercase())
            .unwrap_or_default()
    };
    let (s256, s512) = (norm(&o.sha256), norm(&o.sha512));
    let set = |s: &str| !s.is_empty() && s != UNVERIFIED;
    if set(&s256) && set(&s512) {
        return Err(format!(
            "{url}: give download() a sha256 or a sha512, not both"
        ));
    }
    let (algo, given) = if o.sha512.is_some() && !set(&s256) {
        (Algo::Sha512, s512)
    } else {
        (Algo::Sha256, s256)
    };
    let a = algo.name();
    let opted_out = o.verify == Some(false) || given == UNVERIFIED;
    if given.is_empty() || given == UNVERIFIED {
        if opted_out {
            return Ok(None);
        }
        return Err(match &o.pin {
            Some(v) => format!(
                "refused: {url} has no {a} to check it against, and it would be installed as root. \
                 Set the variable {v} to its {a} ({a}sum of a copy you trust, or the \
                 checksum its publisher signs), or to \"{UNVERIFIED}\" to take it unchecked"
            ),
            None => format!(
                "refused: {url} has no {a} to check it against. Give download() \
                 #{{{a}: \"<{} hex digits>\"}}, or #{{verify: false}} to take it unchecked",
                algo.len()
            ),
        });
    }
    if given.len() != algo.len() || !given.chars().all(|c| c.is_ascii_hexdigit()) {
        let var = o
            .pin
            .as_deref()
            .map(|v| format!(" (variable {v})"))
            .unwrap_or_default();
        return Err(format!(
            "{a} {given:?}{var} is not {} hex digits (nor \"{UNVERIFIED}\")",
            algo.len()
        ));
    }
    Ok(Some(Want { algo, hex: given }))
}

/// The one warning line of an unverified download.
pub fn unverified_line(url: &str, dest: &str, pin: Option<&str>) -> String {
    let how = match pin {
        Some(v) => format!("set {v} to its checksum to pin it"),
        None => "give download() a sha256 to pin it".to_string(),
    };
    format!("warning: {dest} from {url} is not verified (no checksum): {how}")
}

/// What a mismatch says: both checksums and what to change.
fn pin_hint(pin: Option<&str>, algo: Algo) -> String {
    match pin {
        Some(v) => format!(
            "; the file served is not the one pinned: if you trust the new file, set {v} to its {}",
            algo.name()
        ),
        None => format!(
            "; the file served is not the one pinned by download()'s {}",
            algo.name()
        ),
    }
}

/// The script that downloads `url` to `dest` (checked against `want`), atomically.
pub fn download_script(
    url: &str,
    dest: &str,
    want: Option<&Want>,
    pin: Option<&str>,
    attrs: &Attrs,
) -> String {
    let (u, d) = (quote(url), quote(dest));
    // The size so far, every second, for the status line (the worker reads stdout as it
    // comes; see `transport::BYTES_LINE`); stopped, and waited for, before the file is
    // moved or removed: nothing of it may follow the command's end on the worker's stdout.
    let mut s = format!(
        "set -e\nt=$(dirname -- {d}; printf x)\nt=$(mktemp \"${{t%?x}}/.recipe.XXXXXXXX\")\n\
         (while sleep 1; do printf '{bytes} %s\\n' \"$(wc -c 2>/dev/null < \"$t\")\"; done) 2>/dev/null &\n\
         p=$!\ntrap '[ -z \"$p\" ] || {{ kill $p 2>/dev/null; wait $p; }}; rm -f \"$t\"' EXIT\n\
         if command -v curl >/dev/null 2>&1; then curl -fsSL --retry 3 -o \"$t\" {u}; \
         elif command -v wget >/dev/null 2>&1; then wget -q -O \"$t\" {u}; \
         else echo 'neither curl nor wget is installed on the target' >&2; exit 1; fi\n\
         kill $p 2>/dev/null || :\nwait $p || :\np=\n",
        bytes = crate::transport::BYTES_LINE
    );
    if let Some(w) = want {
        let hint = quote(&pin_hint(pin, w.algo));
        let (a, h) = (w.algo.name(), &w.hex);
        s.push_str(&format!(
            "got=$({a}sum < \"$t\" | cut -d' ' -f1)\n[ \"$got\" = {h} ] || {{ printf 'checksum mismatch: %s has {a} %s, expected {h}%s\\n' {u} \"$got\" {hint} >&2; exit 1; }}\n"
        ));
    }
    s.push_str("chmod 0644 \"$t\"\n");
    let (cmds, _) = attr_fixes(
        "\"$t\"",
        &StatInfo {
            kind: FileKind::Regular,
            owner: String::new(),
            group: String::new(),
            mode: 0o644,
            size: 0,
        },
        attrs,
    );
    for c in cmds {
        s.push_str(&c);
        s.push('\n');
    }
    s.push_str(&format!("mv -f \"$t\" {d}\ntrap - EXIT\n"));
    s
}

/// The decision of `download`: from what is at `dest` to nothing, attribute fixes, or the
/// download (with a checksum, a file with another one is downloaded again; without one,
/// any regular file at `dest` is the download). `cur`'s checksum is in the algorithm the
/// download is checked with (sha256 unless it gives a sha512).
pub fn download_step<'a>(
    url: &str,
    dest: &str,
    cur: Option<&(StatInfo, String)>,
    o: &DownloadOpts,
) -> StepResult<'a> {
    super::no_nul("url", url)?;
    super::no_nul("path", dest)?;
    let want = expected(url, o)?;
    let keep_sum = match (cur, &want) {
        (Some((_, sum)), None) => sum.clone(),
        (_, Some(w)) => w.hex.clone(),
        (None, None) => String::new(),
    };
    let field = want.as_ref().map_or(Algo::Sha256, |w| w.algo).name();
    let identity = format!("{url} {want:?} {:?}", o.attrs);
    let plan = match plan_content(dest, cur, &keep_sum, &o.attrs)? {
        ContentPlan::Keep(fix) => StepPlan::from(fix).with(field, keep_sum),
        ContentPlan::Write { .. } => StepPlan::script(
            vec![format!("download {url}")],
            download_script(url, dest, want.as_ref(), o.pin.as_deref(), &o.attrs),
            None,
            Some(std::time::Duration::from_secs(o.timeout.unwrap_or(1800))),
        ),
    };
    Ok(plan
        .with("path", dest.to_string())
        .same_as(identity)
        .writes(dest, PlannedFile::new(PlannedContent::Unknown, "")))
}

pub(crate) fn do_download(
    ctx: &NativeCallContext,
    url: &str,
    dest: &str,
    o: DownloadOpts,
) -> Result<Dynamic, Box<EvalAltResult>> {
    super::step(ctx, "download", dest, |h| {
        super::no_nul("path", dest)?;
        // Refused (no checksum and no explicit opt-out) before the host is even asked.
        let want = expected(url, &o)?;
        if want.is_none() && h.run.downloads.first_warning(url, dest) {
            let line = unverified_line(url, dest, o.pin.as_deref());
            h.run.reporter.warning(&h.name, &line);
        }
        let mut cur = probe_file(h, dest)?;
        // Pinned by sha512: the file there is held against its own sha512 (one more check,
        // only when there is a file).
        if let (
            Some(Want {
                algo: Algo::Sha512, ..
            }),
            Some((st, sum)),
        ) = (&want, cur.as_mut())
        {
            if st.kind == FileKind::Regular {
                let out = super::check(h, &format!("sha512sum < {} | cut -d' ' -f1", quote(dest)))?;
                *sum = if out.status == 0 {
                    out.stdout_str().trim().to_string()
                } else {
                    String::new()
                };
            }
        }
        let plan = download_step(url, dest, cur.as_ref(), &o)?;
        // Due, on a host without curl or wget: the controller fetches and streams it.
        if matches!(plan.action, super::Action::Script { .. })
            && !super::download::host_can_fetch(h)?
        {
            super::download::controller_can_fetch(url)?;
            let t = std::time::Duration::from_secs(o.timeout.unwrap_or(1800));
            return Ok(super::download::via_controller(
                url,
                dest,
                want,
                o.pin.clone(),
                &o.attrs,
                t,
                &h.name,
            )
            .with("path", dest.to_string()));
        }
        // The host's fetcher reports the bytes it has (see `download_script`); the probes'
        // output is behind us.
        if let Some(m) = crate::context::step_meter() {
            m.keep_lines();
        }
        Ok(plan)
    })
}
