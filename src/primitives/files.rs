//! Files on the target: `file` (content, a controller file or another host's file, streamed
//! when large) and `directory`, and the Rhai API of the file family, whose other members
//! live beside it: `template`, `download`, `unpack`, and `read` (read_file, stat, exists, require).

use rhai::plugin::*;
use std::path::PathBuf;

use super::{
    attr_fixes, check, in_c_locale, parse_stat, Attrs, FileKind, Plan, StatInfo, StepError,
    StepPlan, StepResult, STAT_FMT,
};
use crate::context::HostCtx;
use crate::planned::{PlannedContent, PlannedFile};
use crate::secrets::{describe_bytes, sha256_hex, Secret};
use crate::transport::quote;
use std::sync::Arc;

#[cfg(test)]
use super::download::download_step;
use super::download::{do_download, DownloadOpts};
pub use super::read::*;
pub use super::template::*;
pub use super::unpack::*;

crate::primitives::options::options! {
    /// Options of `file`.
    pub struct FileOpts for "file" {
        /// A string, a blob or a secret: taken out of the map before it is read.
        #[serde(skip)]
        content: Option<Dynamic>,
        src: Option<String>,
        from_host: Option<String>,
        secret: bool,
        state: Option<FileState>,
        ..attrs: Attrs
    }
}

choice!(
    /// `state` of `file` ("file" is an old spelling of "present").
    FileState, "state", ["present" => Present, "absent" => Absent], aliases ["file" => Present]
);

choice!(
    /// `state` of `directory` ("directory" is an old spelling of "present").
    DirState, "state", ["present" => Present, "absent" => Absent], aliases ["directory" => Present]
);

/// Content going to a file, and whether it must stay hidden.
pub struct Payload {
    pub bytes: Arc<Vec<u8>>,
    pub secret: bool,
}

pub(crate) const DIFF_MAX: u64 = 256 * 1024;
/// Another host's files above this size stream host to host instead of being read whole.
pub(crate) const STREAM_OVER: u64 = 1024 * 1024;

/// What a step finds at `path`: the host's own state, or, in a dry run where an earlier
/// step of this run plans the path with a known result (content, directory, removal), that
/// result: the real run would find it there. A plan whose content is not known yet (a
/// command makes the file) leaves the host's state and the callers' own "depends on" notes.
pub(crate) fn probe_file(h: &HostCtx, path: &str) -> Result<Option<(StatInfo, String)>, StepError> {
    let cur = probe_host_file(h, path)?;
    if !h.run.dry_run {
        return Ok(cur);
    }
    Ok(match super::planned_file(h, &h.name, path) {
        Some(pf) if pf.content != PlannedContent::Unknown => as_planned(cur, &pf),
        _ => cur,
    })
}

/// The stat and checksum a path will have once the step that plans `pf` has run.
pub(crate) fn as_planned(
    cur: Option<(StatInfo, String)>,
    pf: &PlannedFile,
) -> Option<(StatInfo, String)> {
    let st = planned_stat(cur.map(|(st, _)| st), Some(pf))?;
    let sum = match &pf.content {
        PlannedContent::Bytes { bytes, .. } => sha256_hex(bytes),
        _ => "-".to_string(),
    };
    Some((st, sum))
}

/// The bytes an earlier step of this dry run plans for `path` on this host, if known, and
/// whether they are secret.
pub(crate) fn planned_bytes(h: &HostCtx, path: &str) -> Option<(Arc<Vec<u8>>, bool)> {
    if !h.run.dry_run {
        return None;
    }
    match super::planned_file(h, &h.name, path)?.content {
        PlannedContent::Bytes { bytes, secret } => Some((bytes, secret)),
        _ => None,
    }
}

/// The command that prints the stat line and checksum of `path` (`<hash>  -`, or `-` for
/// what is not a regular file), or `absent`.
pub(crate) fn file_probe(path: &str) -> String {
    let q = quote(path);
    format!(
        "if [ -e {q} ] || [ -L {q} ]; then stat -c '{STAT_FMT}' -- {q} && if [ -f {q} ]; then sha256sum < {q}; else echo -; fi; else echo absent; fi"
    )
}

/// One round trip: stat and checksum of `path` on the host, or `absent`.
pub(crate) fn probe_host_file(
    h: &HostCtx,
    path: &str,
) -> Result<Option<(StatInfo, String)>, StepError> {
    let cmd = file_probe(path);
    let out = super::step::check_as(h, &cmd, super::prefetch::Kind::file(path))?;
    if out.status != 0 {
        return Err(StepError::command(&out));
    }
    let text = out.stdout_str();
    let mut lines = text.lines();
    match lines.next() {
        Some("absent") | None => Ok(None),
        Some(l) => {
            let st = parse_stat(l).ok_or_else(|| format!("cannot read stat output {l:?}"))?;
            // `sha256sum < file` prints "<hash>  -": the hash is the first word.
            let sum = lines
                .next()
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or("-")
                .to_string();
            Ok(Some((st, sum)))
        }
    }
}

/// The attribute fixes that bring `st` to `attrs`, as a plan.
pub fn attr_plan(path: &str, st: &StatInfo, attrs: &Attrs) -> Plan {
    let (cmds, changes) = attr_fixes(&quote(path), st, attrs);
    Plan { changes, cmds }
}

/// What to do about a path that must be a regular file with content `new_sum`.
#[derive(Debug, PartialEq, Eq)]
pub enum ContentPlan {
    /// The content is right; the plan fixes owner, group or mode (empty: nothing to do).
    Keep(Plan),
    /// Write the content: a new file, or a rewrite of an existing one.
    Write { create: bool },
}

/// The decision of `file`, `template` and `download`: from what is there (stat and sha256,
/// `None`: nothing) to what to do.
pub fn plan_content(
    path: &str,
    cur: Option<&(StatInfo, String)>,
    new_sum: &str,
    attrs: &Attrs,
) -> Result<ContentPlan, String> {
    match cur {
        None => Ok(ContentPlan::Write { create: true }),
        Some((st, _)) if st.kind != FileKind::Regular => Err(format!(
            "{path} exists and is a {}, not a file: remove it first or choose another path",
            st.kind_name()
        )),
        Some((st, sum)) if sum == new_sum => Ok(ContentPlan::Keep(attr_plan(path, st, attrs))),
        Some(_) => Ok(ContentPlan::Write { create: false }),
    }
}

/// The decision of `directory` (present): create it, fix its attributes, or refuse.
pub fn plan_directory(path: &str, cur: Option<&StatInfo>, attrs: &Attrs) -> Result<Plan, String> {
    let q = quote(path);
    match cur {
        None => {
            let mut cmd = format!("mkdir -p -- {q}");
            // u32::MAX: a mode that never matches, so a wanted mode is always set.
            let fresh = StatInfo {
                kind: FileKind::Directory,
                owner: String::new(),
                group: String::new(),
                mode: u32::MAX,
                size: 0,
            };
            for c in attr_fixes(&q, &fresh, attrs).0 {
                cmd.push_str(" && ");
                cmd.push_str(&c);
            }
            let mut p = Plan::default();
            p.add(format!("create {path}/"), cmd);
            Ok(p)
        }
        Some(st) if st.kind != FileKind::Directory => Err(format!(
            "{path} exists and is a {}, not a directory: remove it first or choose another path",
            st.kind_name()
        )),
        Some(st) => Ok(attr_plan(path, st, attrs)),
    }
}

/// The decision of `state: "absent"` for a file (`dir` false) or a directory.
pub fn plan_remove(path: &str, cur: Option<&StatInfo>, dir: bool) -> Result<Plan, String> {
    let mut p = Plan::default();
    let Some(st) = cur else {
        return Ok(p);
    };
    let is_dir = st.kind == FileKind::Directory;
    if dir && !is_dir {
        return Err(format!(
            "{path} is a {}, not a directory: remove it with file({path:?}, #{{state: \"absent\"}})",
            st.kind_name()
        ));
    }
    if !dir && is_dir {
        return Err(format!(
            "{path} is a directory, not a file: remove it with directory({path:?}, #{{state: \"absent\"}})"
        ));
    }
    p.add(
        format!("remove {path}"),
        format!("rm -rf -- {}", quote(path)),
    );
    Ok(p)
}

pub(crate) fn is_text(b: &[u8]) -> bool {
    !b.iter().take(8192).any(|c| *c == 0) && std::str::from_utf8(b).is_ok()
}

/// Unified diff old → new, or a size/checksum line for secret or binary content.
pub fn content_diff(path: &str, old: Option<&[u8]>, new: &[u8], secret: bool) -> String {
    if secret {
        return format!(
            "--- {path}\n+++ {path}\n  secret content: {} -> {}\n",
            old.map(describe_bytes).unwrap_or_else(|| "absent".into()),
            describe_bytes(new)
        );
    }
    let old_b = old.unwrap_or(b"");
    if !is_text(old_b) || !is_text(new) {
        let d = |b: &[u8]| format!("{} bytes, sha256 {}", b.len(), &sha256_hex(b)[..16]);
        return format!(
            "--- {path}\n+++ {path}\n  binary content: {} -> {}\n",
            old.map(d).unwrap_or_else(|| "absent".into()),
            d(new)
        );
    }
    let o = String::from_utf8_lossy(old_b);
    let n = String::from_utf8_lossy(new);
    similar::TextDiff::from_lines(o.as_ref(), n.as_ref())
        .unified_diff()
        .context_radius(3)
        .header(
            &if old.is_some() {
                path.to_string()
            } else {
                "/dev/null".into()
            },
            path,
        )
        .to_string()
}

/// The atomic write: a temporary file in the target folder gets its final owner and
/// mode while still empty, then the content, then is renamed over the target. With
/// `expect`, it also checks the size and sha256 of what arrived before the rename:
/// a connection cut mid-transfer ends `cat` early, and a partial file must never replace
/// the target. The mode is set first (never wider than the final one: a reader that opens
/// the empty file early keeps its descriptor), then the owner, then the mode again (chown
/// clears set-id bits).
pub fn write_script_checked(
    path: &str,
    attrs: &Attrs,
    keep_existing: bool,
    expect: Option<(usize, &str)>,
) -> String {
    let q = quote(path);
    let mut s = format!(
        "set -e\nd=$(dirname -- {q}; printf x)\nd=${{d%?x}}\n[ -d \"$d\" ] || {{ echo \"folder $d does not exist\" >&2; exit 1; }}\nt=$(mktemp \"$d/.recipe.XXXXXXXX\")\ntrap 'rm -f \"$t\"' EXIT\n"
    );
    let mode = match attrs.mode {
        Some(m) => format!("chmod {m} \"$t\"\n"),
        None if keep_existing => format!(
            "if [ -e {q} ]; then chmod --reference={q} \"$t\"; else chmod 0644 \"$t\"; fi\n"
        ),
        None => "chmod 0644 \"$t\"\n".to_string(),
    };
    s.push_str(&mode);
    if keep_existing && (attrs.owner.is_none() || attrs.group.is_none()) {
        s.push_str(&format!(
            "if [ -e {q} ]; then chown --reference={q} \"$t\"; fi\n"
        ));
    }
    match (&attrs.owner, &attrs.group) {
        (Some(o), Some(g)) => s.push_str(&format!("chown {} \"$t\"\n", quote(&format!("{o}:{g}")))),
        (Some(o), None) => s.push_str(&format!("chown {} \"$t\"\n", quote(o))),
        (None, Some(g)) => s.push_str(&format!("chgrp {} \"$t\"\n", quote(g))),
        (None, None) => {}
    }
    s.push_str(&mode);
    s.push_str("cat > \"$t\"\n");
    if let Some((len, sha)) = expect {
        s.push_str(&format!(
            "n=$(wc -c < \"$t\" | tr -d ' ')\n\
             if [ \"$n\" != {len} ] || [ \"$(sha256sum < \"$t\" | cut -d' ' -f1)\" != {sha} ]; then \
             rm -f \"$t\"; echo \"only $n of {len} bytes arrived (connection cut?): the file was left unchanged\" >&2; exit 1; fi\n"
        ));
    }
    s.push_str(&format!("mv -f \"$t\" {q}\ntrap - EXIT\n"));
    s
}

/// The plan that makes `path` hold `payload` with `attrs`, from what is there (`cur`): the
/// shared core of file and template. `old` reads the current content for a diff.
pub fn content_step<'a>(
    path: &str,
    cur: Option<&(StatInfo, String)>,
    payload: &Payload,
    attrs: &Attrs,
    diff: Option<String>,
) -> StepResult<'a> {
    let new_sum = sha256_hex(&payload.bytes);
    let identity = format!("{new_sum} {attrs:?}");
    let planned = PlannedFile {
        owner: attrs.owner.clone(),
        group: attrs.group.clone(),
        mode: attrs.mode.map(|m| m.0),
        ..PlannedFile::new(
            PlannedContent::Bytes {
                bytes: payload.bytes.clone(),
                secret: payload.secret,
            },
            "",
        )
    };
    let plan = match plan_content(path, cur, &new_sum, attrs)? {
        ContentPlan::Keep(fix) => StepPlan::from(fix),
        ContentPlan::Write { create } => {
            let script = write_script_checked(
                path,
                attrs,
                true,
                Some((payload.bytes.len(), new_sum.as_str())),
            );
            let what = if create { "create" } else { "rewrite" };
            let mut p = StepPlan::script(
                vec![format!("{what} {path} ({} bytes)", payload.bytes.len())],
                script,
                Some(payload.bytes.clone()),
                None,
            );
            p.diff = diff;
            p
        }
    };
    Ok(plan
        .with("path", path.to_string())
        .with("sha256", new_sum)
        .same_as(identity)
        .writes(path, planned))
}

/// Probes `path` and plans its content: file and template.
pub fn ensure_content<'a>(
    h: &HostCtx,
    path: &str,
    payload: &Payload,
    attrs: &Attrs,
) -> StepResult<'a> {
    super::no_nul("path", path)?;
    if payload.secret {
        h.run.reporter.redactor().add(&payload.bytes);
    }
    let cur = probe_file(h, path)?;
    let needs_write = cur
        .as_ref()
        .is_none_or(|(_, sum)| *sum != sha256_hex(&payload.bytes));
    let diff = if needs_write && h.run.reporter.wants_diff() {
        // Secrets never travel back for a diff; big files are summarized. Content that holds
        // a secret (a template with a token) is summarized too: its old version may hold an
        // old secret, which the redactor does not know.
        let hidden = payload.secret || h.run.reporter.redactor().found_in(&payload.bytes);
        let planned = planned_bytes(h, path);
        let old_hidden = planned.as_ref().is_some_and(|(_, secret)| *secret);
        Some(match &cur {
            Some((st, _)) if st.kind != FileKind::Regular => String::new(),
            Some((st, _)) if hidden || old_hidden || st.size > DIFF_MAX => format!(
                "--- {path}\n+++ {path}\n  content: {} bytes -> {}\n",
                st.size,
                if hidden {
                    describe_bytes(&payload.bytes)
                } else {
                    format!("{} bytes", payload.bytes.len())
                }
            ),
            Some(_) => match planned {
                Some((old, _)) => content_diff(path, Some(&old), &payload.bytes, false),
                None => {
                    let old = check(h, &format!("cat -- {}", quote(path)))?;
                    content_diff(path, Some(&old.stdout), &payload.bytes, false)
                }
            },
            None => content_diff(path, None, &payload.bytes, hidden),
        })
    } else {
        None
    };
    content_step(path, cur.as_ref(), payload, attrs, diff)
}

pub(crate) fn remove_path<'a>(h: &HostCtx, path: &str, dir: bool) -> StepResult<'a> {
    super::no_nul("path", path)?;
    let cur = probe_file(h, path)?;
    Ok(
        StepPlan::from(plan_remove(path, cur.as_ref().map(|(st, _)| st), dir)?)
            .same_as("absent")
            .writes(path, PlannedFile::new(PlannedContent::Absent, "")),
    )
}

/// Turns a content value (string, blob or secret) into bytes.
pub(crate) fn content_of(v: Dynamic) -> Result<Payload, String> {
    if v.is::<Secret>() {
        let s = v.cast::<Secret>();
        return Ok(Payload {
            bytes: Arc::new(s.0.to_vec()),
            secret: true,
        });
    }
    if v.is_blob() {
        return Ok(Payload {
            bytes: Arc::new(v.cast::<rhai::Blob>()),
            secret: false,
        });
    }
    if let Ok(s) = v.clone().into_immutable_string() {
        return Ok(Payload {
            bytes: Arc::new(s.as_bytes().to_vec()),
            secret: false,
        });
    }
    Err(format!(
        "content must be a string, a blob or a secret, not {}",
        v.type_name()
    ))
}

/// Reads a controller file relative to the recipe's folder.
pub fn controller_file(h: &HostCtx, src: &str) -> Result<(PathBuf, Vec<u8>), String> {
    let p = h.recipe.dir.join(src);
    std::fs::read(&p)
        .map(|b| (p.clone(), b))
        .map_err(|e| format!("cannot read {} on the controller: {e}", p.display()))
}

/// Copies a big file of `host` here in bounded chunks (never whole in the controller's
/// memory), checked by size and sha256 before it replaces `path`. `None`: the file is small
/// enough to go the ordinary way (with a diff).
pub(crate) fn stream_from_host<'a>(
    h: &HostCtx,
    host: &'a str,
    src: &'a str,
    path: &'a str,
    attrs: &'a Attrs,
) -> Result<Option<StepPlan<'a>>, StepError> {
    super::no_nul("path", src)?;
    super::no_nul("path", path)?;
    let qs = quote(src);
    let out = h
        .exec_on(
            host,
            &in_c_locale(&format!("stat -L -c %s -- {qs} && sha256sum < {qs}")),
            None,
        )
        .map_err(|e| StepError::from(e).doing(host))?;
    if out.status != 0 {
        return Err(StepError::command(&out).doing(format!("cannot read {src} on {host}")));
    }
    let text = out.stdout_str();
    let mut words = text.split_whitespace();
    let size: u64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("cannot read the size of {src} on {host}: {text:?}"))?;
    let sum = words.next().unwrap_or_default().to_string();
    if size <= STREAM_OVER {
        return Ok(None);
    }
    let cur = probe_file(h, path)?;
    let plan = stream_step(
        h.run.reporter.wants_diff(),
        host,
        src,
        path,
        attrs,
        cur.as_ref(),
        size,
        sum,
    )?;
    Ok(Some(plan))
}

/// The plan of a streamed copy of `host:src` (`size` bytes, `sum`) to `path`.
#[allow(clippy::too_many_arguments)]
pub fn stream_step<'a>(
    diff: bool,
    host: &'a str,
    src: &'a str,
    path: &'a str,
    attrs: &'a Attrs,
    cur: Option<&(StatInfo, String)>,
    size: u64,
    sum: String,
) -> StepResult<'a> {
    let create = match plan_content(path, cur, &sum, attrs)? {
        ContentPlan::Keep(fix) => {
            return Ok(StepPlan::from(fix)
                .with("path", path.to_string())
                .with("sha256", sum))
        }
        ContentPlan::Write { create } => create,
    };
    let change = format!(
        "{} {path} ({size} bytes, streamed from {host}:{src})",
        if create { "create" } else { "rewrite" }
    );
    let diff = diff.then(|| {
        let old = cur
            .map(|(st, _)| format!("{} bytes", st.size))
            .unwrap_or_else(|| "absent".into());
        format!(
            "--- {path}\n+++ {path}\n  content: {old} -> {size} bytes from {host}:{src} (sha256 {sum})\n"
        )
    });
    let identity = format!("{sum} {attrs:?}");
    let expect = sum.clone();
    let mut plan = StepPlan::work(false, move |h| {
        let script = write_script_checked(path, attrs, true, Some((size as usize, &expect)));
        if let Some(m) = crate::context::step_meter() {
            m.set_total(size);
        }
        let (src_out, dst_out) = h
            .pipe_from(
                host,
                &in_c_locale(&format!("cat -- {}", quote(src))),
                &in_c_locale(&script),
            )
            .map_err(|e| StepError::from(e).doing(format!("copying {src} from {host}")))?;
        if dst_out.status != 0 {
            return Err(StepError::command(&dst_out));
        }
        if src_out.status != 0 {
            return Err(StepError::command(&src_out).doing(format!("cannot read {src} on {host}")));
        }
        Ok(rhai::Map::new())
    });
    plan.changes = vec![change];
    plan.diff = diff;
    Ok(plan
        .with("path", path.to_string())
        .with("sha256", sum)
        .same_as(identity)
        .writes(path, PlannedFile::new(PlannedContent::Unknown, "")))
}

/// The plan of a copy from a file that a step of this run plans but has not written: it
/// says what it depends on instead of showing a guessed content.
pub fn pending_step<'a>(
    path: &str,
    cur: Option<&(StatInfo, String)>,
    from: (&str, &str),
    pf: &PlannedFile,
    diff: bool,
) -> StepResult<'a> {
    if let Some((st, _)) = cur.filter(|(st, _)| st.kind != FileKind::Regular) {
        return Err(format!(
            "{path} exists and is a {}, not a file: remove it first or choose another path",
            st.kind_name()
        )
        .into());
    }
    let dep = pf.depends(from.0, from.1);
    let what = if cur.is_some() { "write" } else { "create" };
    let mut p = StepPlan::ok();
    p.changes = vec![format!("{what} {path} from {}:{}: {dep}", from.0, from.1)];
    if diff {
        p.diff = Some(format!("--- {path}\n+++ {path}\n  content: {dep}\n"));
    }
    Ok(p.with("path", path.to_string())
        .same_as(format!("from {}:{}", from.0, from.1))
        .writes(path, PlannedFile::new(PlannedContent::Unknown, "")))
}

/// The plan of `file` with attributes only, on a path that is not there but that a step of
/// this run plans: its attributes are set once it exists.
pub fn pending_attrs_step<'a>(
    path: &str,
    me: &str,
    pf: &PlannedFile,
    attrs: &Attrs,
) -> StepResult<'a> {
    let want: Vec<String> = [
        attrs.owner.as_ref().map(|o| format!("owner {o}")),
        attrs.group.as_ref().map(|g| format!("group {g}")),
        attrs.mode.map(|m| format!("mode {m}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut p = StepPlan::ok();
    if !want.is_empty() {
        p.changes = vec![format!(
            "{} of {path} once it exists: {}",
            want.join(", "),
            pf.depends(me, path)
        )];
    }
    Ok(p.same_as(format!("{attrs:?}")))
}

pub(crate) fn do_file(
    ctx: &NativeCallContext,
    path: &str,
    mut m: rhai::Map,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let content = m.remove("content");
    let mut o: FileOpts = super::opts(ctx, m)?;
    o.content = content;
    super::step(ctx, "file", path, |h| {
        super::no_nul("path", path)?;
        if o.state == Some(FileState::Absent) {
            return remove_path(h, path, false);
        }
        let mut payload = match (&o.content, &o.src, &o.from_host) {
            (Some(c), None, None) => content_of(c.clone())?,
            (None, Some(src), None) => Payload {
                bytes: Arc::new(controller_file(h, src)?.1),
                secret: false,
            },
            (None, Some(src), Some(host)) => {
                if super::planned_file(h, host, src).is_none() && !o.secret {
                    if let Some(r) = stream_from_host(h, host, src, path, &o.attrs)? {
                        return Ok(r);
                    }
                }
                let planned_secret = matches!(
                    super::planned_file(h, host, src).map(|pf| pf.content),
                    Some(PlannedContent::Bytes { secret: true, .. })
                );
                match read_remote(h, host, src)? {
                    Remote::Bytes(b) => Payload {
                        bytes: Arc::new(b),
                        secret: planned_secret,
                    },
                    Remote::Pending(pf) => {
                        super::no_nul("path", path)?;
                        let cur = probe_file(h, path)?;
                        let diff = h.run.reporter.wants_diff();
                        return pending_step(path, cur.as_ref(), (host, src), &pf, diff);
                    }
                }
            }
            (None, None, None) => {
                // Only attributes: the file must exist (or be planned by this run).
                super::no_nul("path", path)?;
                let Some(st) = probe_file(h, path)? else {
                    if let Some(pf) = super::planned_file(h, &h.name, path)
                        .filter(|pf| pf.content != PlannedContent::Absent)
                    {
                        return pending_attrs_step(path, &h.name, &pf, &o.attrs);
                    }
                    return Err(format!(
                        "{path} does not exist: give `content` or `src` to create it"
                    )
                    .into());
                };
                let mut p = StepPlan::from(attr_plan(path, &st.0, &o.attrs))
                    .same_as(format!("{:?}", o.attrs));
                // A later step of this dry run sees the planned file with these attributes.
                // (A file only the host has keeps the host's attributes in the registry.)
                if let Some(mut pf) =
                    super::planned_file(h, &h.name, path).filter(|_| h.run.dry_run)
                {
                    pf.owner = o.attrs.owner.clone().or(pf.owner);
                    pf.group = o.attrs.group.clone().or(pf.group);
                    pf.mode = o.attrs.mode.map(|m| m.0).or(pf.mode);
                    p = p.writes(path, pf);
                }
                return Ok(p);
            }
            _ => return Err("give one of content, src, or src with from_host".into()),
        };
        payload.secret |= o.secret;
        ensure_content(h, path, &payload, &o.attrs)
    })
}

crate::primitives::options::options! {
    /// Options of `directory`.
    pub struct DirOpts for "directory" {
        state: Option<DirState>,
        ..attrs: Attrs
    }
}

pub(crate) fn do_directory(
    ctx: &NativeCallContext,
    path: &str,
    o: DirOpts,
) -> Result<Dynamic, Box<EvalAltResult>> {
    super::step(ctx, "directory", path, |h| {
        super::no_nul("path", path)?;
        if o.state == Some(DirState::Absent) {
            return remove_path(h, path, true);
        }
        let cur = probe_file(h, path)?;
        let plan = plan_directory(path, cur.as_ref().map(|(st, _)| st), &o.attrs)?;
        Ok(StepPlan::from(plan)
            .with("path", path.to_string())
            .same_as(format!("{:?}", o.attrs))
            .writes(path, PlannedFile::new(PlannedContent::Directory, "")))
    })
}

#[export_module]
pub mod api {
    use super::*;

    /// Ensures a file's content, owner, group and mode. Content comes from `content`
    /// (string, blob or secret), `src` (a file beside the recipe, on the controller) or
    /// `src` + `from_host` (a file of another inventory host, copied through the controller).
    /// Options: `owner`, `group`, `mode` ("0644"), `secret` (never shown: size and
    /// sha256 only), `state` ("present" | "absent"; any other value is an error before the
    /// host is touched). Written atomically (temporary file
    /// with the final owner and mode, then renamed). Returns `#{changed, path, sha256}`.
    ///
    /// ```rhai
    /// file("/etc/munge/munge.key", #{from_host: "master", src: "/etc/munge/munge.key",
    ///      owner: "munge", group: "munge", mode: "0400", secret: true});
    /// ```
    #[rhai_fn(name = "file", return_raw)]
    pub fn file(
        ctx: NativeCallContext,
        path: &str,
        opts: rhai::Map,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        do_file(&ctx, path, opts)
    }

    /// Ensures a directory exists (parents too) with owner, group and mode.
    /// Options: `owner`, `group`, `mode`, `state` ("present" | "absent"; any other value is
    /// an error before the host is touched). A path that exists and is not a directory is an error.
    ///
    /// ```rhai
    /// directory("/var/spool/slurmctld", #{owner: "slurm", group: "slurm", mode: "0755"});
    /// ```
    #[rhai_fn(name = "directory", return_raw)]
    pub fn directory(
        ctx: NativeCallContext,
        path: &str,
        opts: rhai::Map,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let o: DirOpts = crate::primitives::opts(&ctx, opts)?;
        do_directory(&ctx, path, o)
    }

    /// Ensures a directory exists, with default owner and mode.
    #[rhai_fn(name = "directory", return_raw)]
    pub fn directory1(ctx: NativeCallContext, path: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        do_directory(&ctx, path, DirOpts::default())
    }

    /// Renders a Jinja template (minijinja; a file beside the recipe) with the recipe's
    /// variables plus `vars` (a map) and ensures `dest` holds the result, like `file`.
    /// Undefined variables are errors naming the template and line. Nothing is
    /// auto-escaped, whatever the file name (`x.yaml.j2`, `x.json.j2` render as written).
    /// Options: `vars`, `owner`, `group`, `mode`, `secret`.
    ///
    /// ```rhai
    /// template("/etc/slurm/slurm.conf", "templates/slurm.conf.j2", #{vars: #{nodes: nodes}});
    /// ```
    #[rhai_fn(name = "template", return_raw)]
    pub fn template(
        ctx: NativeCallContext,
        dest: &str,
        src: &str,
        opts: rhai::Map,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        do_template(&ctx, dest, src, opts)
    }

    /// Renders a template with the recipe's variables only.
    #[rhai_fn(name = "template", return_raw)]
    pub fn template2(
        ctx: NativeCallContext,
        dest: &str,
        src: &str,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        do_template(&ctx, dest, src, rhai::Map::new())
    }

    /// Downloads a URL on the target (curl or wget) unless `dest` already exists with the
    /// given `sha256`. A download without a sha256 is refused before anything is fetched,
    /// unless the recipe says `verify: false` or the sha256 is `"unverified"` (a site's
    /// explicit choice); such a download prints one warning line per run, naming the file
    /// and `pin`, the variable that would pin it. A file that does not match is refused
    /// before it replaces `dest`, with both checksums and `pin` in the message. `sha512`
    /// instead of `sha256` checks with sha512 (for files whose publisher lists only that).
    /// Options: `sha256`, `sha512`, `verify`, `pin`, `owner`, `group`, `mode`, `timeout`.
    /// A host with neither curl nor wget gets the file from the controller, which fetches
    /// the URL once per run with its own curl or wget (the URL must be reachable from the
    /// controller then) and streams it; size and sha256 are checked on the host before
    /// `dest` is replaced. The plan (and a dry run) says which way it goes.
    ///
    /// ```rhai
    /// download(vars.slurm_url, "/usr/local/src/slurm.tar.gz", #{sha256: vars.slurm_sha256, pin: "slurm_sha256"});
    /// ```
    #[rhai_fn(name = "download", return_raw)]
    pub fn download(
        ctx: NativeCallContext,
        url: &str,
        dest: &str,
        opts: rhai::Map,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let o: DownloadOpts = crate::primitives::opts(&ctx, opts)?;
        do_download(&ctx, url, dest, o)
    }

    /// Refused: a download needs options with a `sha256` (or `verify: false`).
    #[rhai_fn(name = "download", return_raw)]
    pub fn download2(
        ctx: NativeCallContext,
        url: &str,
        dest: &str,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        do_download(&ctx, url, dest, DownloadOpts::default())
    }

    /// Unpacks a tar archive (any compression tar knows) on the target into `dest`,
    /// unless `creates` (default: `dest`) exists. Options: `creates`, `strip_components`, `owner`.
    ///
    /// ```rhai
    /// unpack("/usr/local/src/slurm.tar.gz", "/usr/local/src", #{creates: "/usr/local/src/slurm-22.05.8"});
    /// ```
    #[rhai_fn(name = "unpack", return_raw)]
    pub fn unpack(
        ctx: NativeCallContext,
        archive: &str,
        dest: &str,
        opts: rhai::Map,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let o: UnpackOpts = crate::primitives::opts(&ctx, opts)?;
        do_unpack(&ctx, archive, dest, o)
    }

    /// Reads a text file of the target. Not a step; runs in dry runs. In a dry run, a file an
    /// earlier step of the run plans to write (on any host, `host(..).read_file` too) reads as
    /// its planned content; when that content cannot be known yet (a key a command makes, a
    /// download) it reads as empty and a note says what it depends on.
    #[rhai_fn(name = "read_file", return_raw)]
    pub fn read_file(ctx: NativeCallContext, path: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        read_value(&ctx, None, path, ReadOpts::default())
    }

    /// Reads a file of the target. Options: `secret` (returns a secret value that can
    /// only be written to files, never printed), `binary` (returns a blob).
    #[rhai_fn(name = "read_file", return_raw)]
    pub fn read_file_opts(
        ctx: NativeCallContext,
        path: &str,
        opts: rhai::Map,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let o: ReadOpts = crate::primitives::opts(&ctx, opts)?;
        read_value(&ctx, None, path, o)
    }

    /// `#{kind, owner, group, mode, size}` of a path on the target (not following a symbolic
    /// link), or `()` if it does not exist. `kind` is one of "regular file", "regular empty
    /// file", "directory", "symbolic link", "fifo", "socket", "character special file",
    /// "block special file", the same words on every host whatever its locale; `mode` is
    /// octal like "0644".
    #[rhai_fn(name = "stat", return_raw)]
    pub fn stat(ctx: NativeCallContext, path: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        stat_value(&ctx, None, path)
    }

    /// Whether a path exists on the target (in a dry run: or an earlier step of the run plans
    /// to make it; `stat` then shows the planned kind, size and attributes, with `planned`
    /// naming the step's `file:line`).
    #[rhai_fn(name = "exists", return_raw)]
    pub fn exists(ctx: NativeCallContext, path: &str) -> Result<bool, Box<EvalAltResult>> {
        Ok(!stat_value(&ctx, None, path)?.is_unit())
    }

    /// Requires a path that an earlier recipe or step makes: true when it exists (or an
    /// earlier step of this dry run plans it). When it is missing, a real run stops here with
    /// `message`; a dry run, whose earlier steps may only have been reported, notes what a
    /// real run would need and returns false (so the recipe can skip what depends on it).
    ///
    /// ```rhai
    /// require(`${prefix}/sbin/slurmd`, "run slurm_build.rhai first");
    /// if require(conf, "the installation writes it") { file(conf, #{content: ...}); }
    /// ```
    #[rhai_fn(name = "require", return_raw)]
    pub fn require(
        ctx: NativeCallContext,
        path: &str,
        message: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        require_value(&ctx, None, path, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_diff_hides_bytes() {
        let d = content_diff("/k", Some(b"oldsecretvalue"), b"newsecretvalue", true);
        assert!(!d.contains("oldsecret") && !d.contains("newsecret"), "{d}");
        assert!(d.contains("sha256"), "{d}");
    }

    #[test]
    fn text_diff_is_unified() {
        let d = content_diff("/etc/x", Some(b"a\nb\n"), b"a\nc\n", false);
        assert!(d.contains("-b") && d.contains("+c"), "{d}");
    }

    #[test]
    fn write_script_sets_mode_before_content() {
        let s = write_script_checked(
            "/etc/my file",
            &Attrs {
                owner: Some("munge".into()),
                group: Some("munge".into()),
                mode: Some(super::super::Mode(0o400)),
            },
            true,
            None,
        );
        let chmod = s.find("chmod 0400").unwrap_or(usize::MAX);
        let cat = s.find("cat >").unwrap_or(0);
        assert!(chmod < cat, "{s}");
        assert!(s.contains("'/etc/my file'"), "{s}");
    }

    #[test]
    fn templates_are_not_html_escaped_whatever_their_name() {
        let ctx = serde_json::json!({"s": "it's <\"q\"> & co"});
        for name in ["x.yaml.j2", "x.json.j2", "x.html", "x.j2"] {
            assert_eq!(
                render(name, "a: {{ s }}", &ctx).unwrap(),
                "a: it's <\"q\"> & co",
                "{name}"
            );
        }
    }

    #[test]
    fn template_undefined_is_error_with_line() {
        let e = render("t.j2", "a\n{{ nope }}\n", &serde_json::json!({})).unwrap_err();
        assert!(e.contains("t.j2:2"), "{e}");
    }
}

#[cfg(test)]
mod decisions {
    use super::*;
    use crate::primitives::Mode;

    fn st(kind: FileKind, owner: &str, mode: u32, size: u64) -> StatInfo {
        StatInfo {
            kind,
            owner: owner.into(),
            group: owner.into(),
            mode,
            size,
        }
    }

    fn attrs(owner: Option<&str>, mode: Option<u32>) -> Attrs {
        Attrs {
            owner: owner.map(str::to_string),
            group: None,
            mode: mode.map(Mode),
        }
    }

    #[test]
    fn file_content_table() {
        let a = attrs(Some("munge"), Some(0o400));
        let file = |sum: &str, owner: &str, mode: u32| {
            (st(FileKind::Regular, owner, mode, 3), sum.to_string())
        };
        // Absent: create. Other content: rewrite. Same content and attributes: nothing.
        assert_eq!(
            plan_content("/k", None, "aa", &a),
            Ok(ContentPlan::Write { create: true })
        );
        assert_eq!(
            plan_content("/k", Some(&file("bb", "munge", 0o400)), "aa", &a),
            Ok(ContentPlan::Write { create: false })
        );
        assert_eq!(
            plan_content("/k", Some(&file("aa", "munge", 0o400)), "aa", &a),
            Ok(ContentPlan::Keep(Plan::default()))
        );
        // Same content, other owner and mode: only those change.
        let Ok(ContentPlan::Keep(p)) =
            plan_content("/k", Some(&file("aa", "root", 0o644)), "aa", &a)
        else {
            panic!("expected attribute fixes");
        };
        assert_eq!(p.changes, ["owner root -> munge", "mode 0644 -> 0400"]);
        assert_eq!(p.cmds, ["chown -h munge /k", "chmod 0400 /k"]);
        // No attributes asked: whatever they are is fine.
        assert_eq!(
            plan_content(
                "/k",
                Some(&file("aa", "root", 0o644)),
                "aa",
                &Attrs::default()
            ),
            Ok(ContentPlan::Keep(Plan::default()))
        );
        // An empty file is a regular file.
        let empty = (st(FileKind::Regular, "root", 0o644, 0), "e3".to_string());
        assert_eq!(
            plan_content("/k", Some(&empty), "e3", &Attrs::default()),
            Ok(ContentPlan::Keep(Plan::default()))
        );
        // Not a regular file: refused, in English words whatever the host's locale.
        for (kind, word) in [
            (FileKind::Directory, "directory"),
            (FileKind::Symlink, "symbolic link"),
            (FileKind::Fifo, "fifo"),
        ] {
            let cur = (st(kind, "root", 0o755, 0), "-".to_string());
            let e = plan_content("/k", Some(&cur), "aa", &a).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "/k exists and is a {word}, not a file: remove it first or choose another path"
                )
            );
        }
    }

    #[test]
    fn directory_table() {
        let a = attrs(Some("slurm"), Some(0o755));
        let p = plan_directory("/srv/x", None, &a).unwrap();
        assert_eq!(p.changes, ["create /srv/x/"]);
        assert_eq!(
            p.cmds,
            ["mkdir -p -- /srv/x && chown -h slurm /srv/x && chmod 0755 /srv/x"]
        );
        let p = plan_directory("/srv/x", None, &Attrs::default()).unwrap();
        assert_eq!(p.cmds, ["mkdir -p -- /srv/x"]);
        // Exists as wanted: nothing (the bug: a Japanese `stat %F` made this an error).
        let d = st(FileKind::Directory, "slurm", 0o755, 4096);
        assert_eq!(plan_directory("/srv/x", Some(&d), &a), Ok(Plan::default()));
        assert_eq!(
            plan_directory("/srv/x", Some(&d), &Attrs::default()),
            Ok(Plan::default())
        );
        let d = st(FileKind::Directory, "root", 0o700, 4096);
        let p = plan_directory("/srv/x", Some(&d), &a).unwrap();
        assert_eq!(p.changes, ["owner root -> slurm", "mode 0700 -> 0755"]);
        let f = st(FileKind::Regular, "root", 0o644, 0);
        assert_eq!(
            plan_directory("/srv/x", Some(&f), &a).unwrap_err(),
            "/srv/x exists and is a regular empty file, not a directory: remove it first or choose another path"
        );
    }

    #[test]
    fn absent_table() {
        let d = st(FileKind::Directory, "root", 0o755, 4096);
        let f = st(FileKind::Regular, "root", 0o644, 3);
        let l = st(FileKind::Symlink, "root", 0o777, 3);
        assert_eq!(plan_remove("/x", None, true), Ok(Plan::default()));
        assert_eq!(plan_remove("/x", None, false), Ok(Plan::default()));
        assert_eq!(
            plan_remove("/x", Some(&d), true).unwrap().cmds,
            ["rm -rf -- /x"]
        );
        assert_eq!(
            plan_remove("/x", Some(&f), false).unwrap().changes,
            ["remove /x"]
        );
        assert_eq!(
            plan_remove("/x", Some(&l), false).unwrap().cmds,
            ["rm -rf -- /x"]
        );
        let e = plan_remove("/x", Some(&d), false).unwrap_err();
        assert!(
            e.contains("is a directory, not a file") && e.contains("directory(\"/x\""),
            "{e}"
        );
        let e = plan_remove("/x", Some(&f), true).unwrap_err();
        assert!(
            e.contains("is a regular file, not a directory") && e.contains("file(\"/x\""),
            "{e}"
        );
    }

    #[test]
    fn an_empty_file_is_written() {
        use crate::transport::Spawner;
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("empty");
        let path = path.to_string_lossy();
        let script = write_script_checked(
            &path,
            &Attrs::default(),
            true,
            Some((0, sha256_hex(b"").as_str())),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut w = crate::transport::local::LocalSpawner
                .spawn()
                .await
                .expect("worker");
            // An empty payload sent as is was refused by the worker ("exit status 98").
            let out = w
                .run(&script, crate::primitives::stdin_bytes(b""), None)
                .await
                .expect("run");
            assert_eq!(out.status, 0, "{}", out.stderr_str());
        });
        assert_eq!(std::fs::read(&*path).expect("written"), b"");
    }

    #[test]
    fn file_and_directory_states_are_checked_when_read() {
        let o: Result<FileOpts, _> = rhai::serde::from_dynamic(&rhai::Dynamic::from_map(
            [("state".into(), rhai::Dynamic::from("abesnt".to_string()))]
                .into_iter()
                .collect(),
        ));
        let e = o.unwrap_err().to_string();
        assert!(
            e.contains("state \"abesnt\" is not one of \"present\", \"absent\""),
            "{e}"
        );
        // The old spellings still read as "present".
        assert_eq!(FileState::parse("file"), Ok(FileState::Present));
        assert_eq!(DirState::parse("directory"), Ok(DirState::Present));
        assert!(DirState::parse("file").is_err());
        assert!(FileState::parse("directory").is_err());
    }

    fn payload(b: &[u8]) -> Payload {
        Payload {
            bytes: Arc::new(b.to_vec()),
            secret: false,
        }
    }

    fn script_of(p: &StepPlan) -> String {
        match &p.action {
            crate::primitives::Action::Script { cmd, .. } => cmd.clone(),
            crate::primitives::Action::Nothing => String::new(),
            _ => "(other)".into(),
        }
    }

    #[test]
    fn content_step_table() {
        let a = attrs(Some("munge"), Some(0o400));
        let sum = sha256_hex(b"abc");
        // Missing: create, with the content as stdin, and the run learns the planned bytes.
        let p = content_step("/k", None, &payload(b"abc"), &a, Some("D".into())).unwrap();
        assert_eq!(p.changes, ["create /k (3 bytes)"]);
        assert_eq!(p.diff.as_deref(), Some("D"));
        assert!(
            script_of(&p).contains("mv -f \"$t\" /k"),
            "{}",
            script_of(&p)
        );
        let crate::primitives::Action::Script { stdin, .. } = &p.action else {
            panic!("a script");
        };
        assert_eq!(stdin.as_deref().map(|v| v.as_slice()), Some(&b"abc"[..]));
        assert_eq!(p.writes.len(), 1);
        assert_eq!(p.writes[0].0, "/k");
        assert_eq!(p.writes[0].1.mode, Some(0o400));
        assert_eq!(p.writes[0].1.owner.as_deref(), Some("munge"));
        assert!(
            matches!(&p.writes[0].1.content, PlannedContent::Bytes { bytes, .. } if bytes.as_slice() == b"abc")
        );
        assert!(p.identity.as_deref().is_some_and(|i| i.starts_with(&sum)));
        // Other content: rewrite.
        let other = (st(FileKind::Regular, "munge", 0o400, 3), "x".to_string());
        let p = content_step("/k", Some(&other), &payload(b"abc"), &a, None).unwrap();
        assert_eq!(p.changes, ["rewrite /k (3 bytes)"]);
        // Same content, other mode: chmod only, no diff, no content sent.
        let same = (st(FileKind::Regular, "munge", 0o644, 3), sum.clone());
        let p = content_step("/k", Some(&same), &payload(b"abc"), &a, Some("D".into())).unwrap();
        assert_eq!(p.changes, ["mode 0644 -> 0400"]);
        assert_eq!(script_of(&p), "chmod 0400 /k");
        assert_eq!(p.diff, None);
        // Same: nothing.
        let ok = (st(FileKind::Regular, "munge", 0o400, 3), sum.clone());
        let p = content_step("/k", Some(&ok), &payload(b"abc"), &a, None).unwrap();
        assert!(p.changes.is_empty());
        assert!(matches!(p.action, crate::primitives::Action::Nothing));
        assert_eq!(
            p.result.get("sha256").map(|v| v.to_string()),
            Some(sum.clone())
        );
        // A directory in the way: refused.
        let dir = (st(FileKind::Directory, "root", 0o755, 0), "-".to_string());
        assert!(content_step("/k", Some(&dir), &payload(b"abc"), &a, None).is_err());
    }

    #[test]
    fn download_table() {
        let url = "http://mirror/x.tar.gz";
        let sha = "a".repeat(64);
        let o = DownloadOpts {
            sha256: Some(sha.to_uppercase()),
            attrs: attrs(None, Some(0o755)),
            timeout: Some(60),
            ..Default::default()
        };
        // Missing: download, checked, within its time limit.
        let p = download_step(url, "/x", None, &o).unwrap();
        assert_eq!(p.changes, [format!("download {url}")]);
        assert!(script_of(&p).contains(&format!("[ \"$got\" = {sha} ]")));
        assert!(script_of(&p).contains("chmod 0755 \"$t\""));
        let crate::primitives::Action::Script { timeout, .. } = &p.action else {
            panic!("a script");
        };
        assert_eq!(*timeout, Some(std::time::Duration::from_secs(60)));
        assert_eq!(p.writes[0].1.content, PlannedContent::Unknown);
        // There with that checksum: nothing; with another: again.
        let there = (st(FileKind::Regular, "root", 0o755, 9), sha.clone());
        assert!(download_step(url, "/x", Some(&there), &o)
            .unwrap()
            .changes
            .is_empty());
        let stale = (st(FileKind::Regular, "root", 0o755, 9), "b".repeat(64));
        assert_eq!(
            download_step(url, "/x", Some(&stale), &o)
                .unwrap()
                .changes
                .len(),
            1
        );
        // No checksum (or ""): refused before anything is fetched, naming the variable.
        for sha256 in [None, Some(String::new())] {
            let none = DownloadOpts {
                sha256,
                pin: Some("slurm_sha256".into()),
                ..Default::default()
            };
            let e = download_step(url, "/x", None, &none)
                .unwrap_err()
                .to_string();
            assert!(e.contains("refused") && e.contains("slurm_sha256"), "{e}");
        }
        // Explicitly unverified (verify: false, or "unverified"): any file there is the
        // download; only its mode is fixed.
        let o2 = DownloadOpts {
            sha256: Some(String::new()),
            verify: Some(false),
            attrs: attrs(None, Some(0o755)),
            ..Default::default()
        };
        let o3 = DownloadOpts {
            sha256: Some("Unverified".into()),
            attrs: attrs(None, Some(0o755)),
            ..Default::default()
        };
        let p = download_step(url, "/x", None, &o3).unwrap();
        assert!(!script_of(&p).contains("sha256sum"), "{}", script_of(&p));
        // verify: false with a sha256: still checked.
        let o4 = DownloadOpts {
            sha256: Some(sha.clone()),
            verify: Some(false),
            ..Default::default()
        };
        let p = download_step(url, "/x", None, &o4).unwrap();
        assert!(script_of(&p).contains(&format!("[ \"$got\" = {sha} ]")));
        let p = download_step(
            url,
            "/x",
            Some(&(st(FileKind::Regular, "root", 0o644, 9), "c".into())),
            &o2,
        )
        .unwrap();
        assert_eq!(p.changes, ["mode 0644 -> 0755"]);
        // A bad checksum is refused before anything runs.
        let bad = DownloadOpts {
            sha256: Some("abc".into()),
            ..Default::default()
        };
        let e = download_step(url, "/x", None, &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not 64 hex digits"), "{e}");
    }

    #[test]
    fn download_by_sha512() {
        let url = "http://mirror/node.tar.gz";
        let sha = "b".repeat(128);
        let o = DownloadOpts {
            sha512: Some(sha.to_uppercase()),
            pin: Some("k8s_node_sha512".into()),
            ..Default::default()
        };
        // Checked with sha512sum, the message naming sha512 and the variable.
        let p = download_step(url, "/x", None, &o).unwrap();
        let s = script_of(&p);
        assert!(s.contains("got=$(sha512sum <"), "{s}");
        assert!(s.contains(&format!("[ \"$got\" = {sha} ]")), "{s}");
        assert!(
            s.contains("has sha512 %s") && s.contains("set k8s_node_sha512 to its sha512"),
            "{s}"
        );
        // The file there, held against its sha512: kept, or downloaded again.
        let there = (st(FileKind::Regular, "root", 0o644, 9), sha.clone());
        let p = download_step(url, "/x", Some(&there), &o).unwrap();
        assert!(p.changes.is_empty());
        assert_eq!(
            p.result.get("sha512").map(|v| v.to_string()),
            Some(sha.clone())
        );
        let stale = (st(FileKind::Regular, "root", 0o644, 9), "c".repeat(128));
        assert_eq!(
            download_step(url, "/x", Some(&stale), &o)
                .unwrap()
                .changes
                .len(),
            1
        );
        // "" is refused naming sha512; 64 digits are not a sha512; both at once are refused.
        let a64 = "a".repeat(64);
        for (sha512, sha256, want) in [
            ("", None, "has no sha512"),
            ("abc", None, "is not 128 hex digits"),
            (a64.as_str(), None, "is not 128 hex digits"),
            (sha.as_str(), Some(a64.clone()), "not both"),
        ] {
            let o = DownloadOpts {
                sha512: Some(sha512.to_string()),
                sha256,
                pin: Some("k8s_node_sha512".into()),
                ..Default::default()
            };
            let e = download_step(url, "/x", None, &o).unwrap_err().to_string();
            assert!(e.contains(want), "{sha512}: {e}");
        }
        // "unverified" as the sha512: taken unchecked.
        let o = DownloadOpts {
            sha512: Some("unverified".into()),
            ..Default::default()
        };
        let p = download_step(url, "/x", None, &o).unwrap();
        assert!(!script_of(&p).contains("sha512sum"), "{}", script_of(&p));
    }

    #[test]
    fn unpack_table() {
        let o = UnpackOpts {
            creates: Some("/src/t/configure".into()),
            strip_components: 1,
            owner: Some("build".into()),
        };
        let f = |marker, archive, planned: Option<&str>| UnpackFacts {
            marker,
            archive,
            planned_archive: planned.map(str::to_string),
        };
        // Done already.
        assert!(unpack_step("/a.tgz", "/src/t", &f(true, true, None), &o)
            .unwrap()
            .changes
            .is_empty());
        assert!(unpack_step("/a.tgz", "/src/t", &f(true, false, None), &o)
            .unwrap()
            .changes
            .is_empty());
        // To do.
        let p = unpack_step("/a.tgz", "/src/t", &f(false, true, None), &o).unwrap();
        assert_eq!(p.changes, ["unpack /a.tgz into /src/t"]);
        assert_eq!(
            script_of(&p),
            "mkdir -p -- /src/t && tar -xf /a.tgz -C /src/t --no-same-owner --strip-components=1 && chown -R build /src/t"
        );
        assert_eq!(p.writes[0].0, "/src/t/configure");
        // No archive: an error, unless a step of this run makes it (then it says so).
        let e = unpack_step("/a.tgz", "/src/t", &f(false, false, None), &o)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "archive /a.tgz does not exist");
        let p = unpack_step(
            "/a.tgz",
            "/src/t",
            &f(
                false,
                false,
                Some("depends on h:/a.tgz (planned at b.rhai:3, not yet there)"),
            ),
            &o,
        )
        .unwrap();
        assert_eq!(
            p.changes,
            ["unpack /a.tgz into /src/t (depends on h:/a.tgz (planned at b.rhai:3, not yet there))"]
        );
    }

    /// A host without xz hears which package to install before anything is unpacked.
    #[test]
    fn unpack_names_a_missing_decompressor() {
        let dir = std::env::temp_dir().join(format!("recipe-unpack-{}", std::process::id()));
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        // A PATH with the shell's tools but no xz.
        for t in ["mkdir", "tar", "cat"] {
            let _ = std::os::unix::fs::symlink(format!("/bin/{t}"), bin.join(t));
        }
        let o = UnpackOpts::default();
        let facts = UnpackFacts {
            marker: false,
            archive: true,
            planned_archive: None,
        };
        let xz = dir.join("a.tar.xz").to_string_lossy().to_string();
        let out_dir = dir.join("out").to_string_lossy().to_string();
        let p = unpack_step(&xz, &out_dir, &facts, &o).unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script_of(&p))
            .env("PATH", &bin)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let made = dir.join("out").exists();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("needs xz") && err.contains("packages([\"xz-utils\"])"),
            "{err}"
        );
        assert!(!made, "the folder was made before the check");
        // gzip needs no check: tar has it on every Debian host.
        let p = unpack_step("/a.tgz", "/t", &facts, &o).unwrap();
        assert!(script_of(&p).starts_with("mkdir"), "{}", script_of(&p));
    }

    #[test]
    fn a_copy_of_a_file_not_there_yet_says_what_it_depends_on() {
        let pf = PlannedFile::new(PlannedContent::Unknown, "munge.rhai:40");
        let p = pending_step(
            "/etc/munge/munge.key",
            None,
            ("master", "/etc/munge/munge.key"),
            &pf,
            true,
        )
        .unwrap();
        assert_eq!(
            p.changes,
            ["create /etc/munge/munge.key from master:/etc/munge/munge.key: depends on master:/etc/munge/munge.key (planned at munge.rhai:40, not yet there)"]
        );
        assert!(p
            .diff
            .as_deref()
            .is_some_and(|d| d.contains("content: depends on master:")));
        assert!(matches!(p.action, crate::primitives::Action::Nothing));
        assert_eq!(p.writes[0].1.content, PlannedContent::Unknown);
        let cur = (st(FileKind::Regular, "munge", 0o400, 1024), "x".to_string());
        let p = pending_step("/k", Some(&cur), ("m", "/k"), &pf, false).unwrap();
        assert!(
            p.changes[0].starts_with("write /k from m:/k: depends on"),
            "{:?}",
            p.changes
        );
        assert_eq!(p.diff, None);
        let dir = (st(FileKind::Directory, "root", 0o755, 0), "-".to_string());
        assert!(pending_step("/k", Some(&dir), ("m", "/k"), &pf, false).is_err());
        // Attributes of a file a command of this run makes.
        let p =
            pending_attrs_step("/k", "master", &pf, &attrs(Some("munge"), Some(0o400))).unwrap();
        assert_eq!(
            p.changes,
            ["owner munge, mode 0400 of /k once it exists: depends on master:/k (planned at munge.rhai:40, not yet there)"]
        );
        assert!(pending_attrs_step("/k", "m", &pf, &Attrs::default())
            .unwrap()
            .changes
            .is_empty());
    }

    #[test]
    fn stat_of_a_planned_path() {
        let cur = st(FileKind::Regular, "root", 0o644, 10);
        // Nothing planned: what is there.
        assert_eq!(planned_stat(Some(cur.clone()), None), Some(cur.clone()));
        assert_eq!(planned_stat(None, None), None);
        // A planned template: its size and attributes.
        let mut pf = PlannedFile::new(
            PlannedContent::Bytes {
                bytes: Arc::new(b"abc".to_vec()),
                secret: false,
            },
            "m.rhai:3",
        );
        pf.mode = Some(0o600);
        pf.owner = Some("slurm".into());
        let s = planned_stat(None, Some(&pf)).unwrap();
        assert_eq!(
            (s.kind, s.size, s.mode, s.owner.as_str(), s.group.as_str()),
            (FileKind::Regular, 3, 0o600, "slurm", "root")
        );
        let s = planned_stat(Some(st(FileKind::Regular, "x", 0o640, 99)), Some(&pf)).unwrap();
        assert_eq!((s.size, s.group.as_str()), (3, "x"));
        // Removed, or a directory.
        assert_eq!(
            planned_stat(
                Some(cur.clone()),
                Some(&PlannedFile::new(PlannedContent::Absent, "a:1"))
            ),
            None
        );
        let d = planned_stat(
            None,
            Some(&PlannedFile::new(PlannedContent::Directory, "a:1")),
        )
        .unwrap();
        assert_eq!(d.kind_name(), "directory");
    }

    #[test]
    fn streamed_copy_table() {
        let a = Attrs::default();
        let p = stream_step(true, "m", "/big", "/big", &a, None, 5 << 20, "s".into()).unwrap();
        assert_eq!(
            p.changes,
            ["create /big (5242880 bytes, streamed from m:/big)"]
        );
        assert!(matches!(
            p.action,
            crate::primitives::Action::Work {
                skip_in_dry_run: false,
                ..
            }
        ));
        assert!(p.diff.is_some());
        let same = (
            st(FileKind::Regular, "root", 0o644, 5 << 20),
            "s".to_string(),
        );
        let p = stream_step(
            false,
            "m",
            "/big",
            "/big",
            &a,
            Some(&same),
            5 << 20,
            "s".into(),
        )
        .unwrap();
        assert!(p.changes.is_empty());
        assert!(matches!(p.action, crate::primitives::Action::Nothing));
    }

    #[test]
    fn directory_and_absent_steps_record_what_they_plan() {
        // (Through the same decision tables as above; the registry learns the kind.)
        let p: StepPlan = plan_directory("/d", None, &Attrs::default())
            .unwrap()
            .into();
        assert_eq!(script_of(&p), "mkdir -p -- /d");
        let p: StepPlan = plan_remove("/d", Some(&st(FileKind::Directory, "r", 0o755, 0)), true)
            .unwrap()
            .into();
        assert_eq!(script_of(&p), "rm -rf -- /d");
    }
}
