//! Files on the target: file (content, controller file or another host's file), directory,
//! template, download, unpack, and the read-only read_file / stat / exists.

use rhai::plugin::*;
use std::path::PathBuf;

use super::{
    apply, attr_fixes, check, in_c_locale, parse_stat, Attrs, FileKind, Outcome, Plan, StatInfo,
    StepResult, STAT_FMT,
};
use crate::context::HostCtx;
use crate::secrets::{describe_bytes, sha256_hex, Secret};
use crate::transport::quote;

/// Options of `file` (besides `content`, taken out first).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOpts {
    pub src: Option<String>,
    pub from_host: Option<String>,
    #[serde(flatten)]
    pub attrs: Attrs,
    #[serde(default)]
    pub secret: bool,
    pub state: Option<FileState>,
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
    pub bytes: Vec<u8>,
    pub secret: bool,
}

const DIFF_MAX: u64 = 256 * 1024;
/// Another host's files above this size stream host to host instead of being read whole.
const STREAM_OVER: u64 = 1024 * 1024;

/// One round trip: stat and checksum of `path`, or `absent`.
fn probe_file(h: &HostCtx, path: &str) -> Result<Option<(super::StatInfo, String)>, String> {
    let q = quote(path);
    let cmd = format!(
        "if [ -e {q} ] || [ -L {q} ]; then stat -c '{STAT_FMT}' -- {q} && if [ -f {q} ]; then sha256sum < {q}; else echo -; fi; else echo absent; fi"
    );
    let out = check(h, &cmd)?;
    if out.status != 0 {
        return Err(super::failure_text(&out));
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

fn is_text(b: &[u8]) -> bool {
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

/// Makes `path` hold `payload` with `attrs`: the shared core of file and template.
pub fn ensure_content(h: &HostCtx, path: &str, payload: &Payload, attrs: &Attrs) -> StepResult {
    super::no_nul("path", path)?;
    if payload.secret {
        h.run.reporter.redactor().add(&payload.bytes);
    }
    let new_sum = sha256_hex(&payload.bytes);
    let cur = probe_file(h, path)?;
    let mut out = Outcome::ok()
        .with("path", path.to_string())
        .with("sha256", new_sum.clone());
    if let ContentPlan::Keep(fix) = plan_content(path, cur.as_ref(), &new_sum, attrs)? {
        fix.apply_to(h, &mut out)?;
        return Ok(out);
    }
    let show = h.run.reporter.wants_diff();
    if show {
        // Secrets never travel back for a diff; big files are summarized. Content that holds
        // a secret (a template with a token) is summarized too: its old version may hold an
        // old secret, which the redactor does not know.
        let hidden = payload.secret || h.run.reporter.redactor().found_in(&payload.bytes);
        let diff = match &cur {
            Some((st, _)) if hidden || st.size > DIFF_MAX => format!(
                "--- {path}\n+++ {path}\n  content: {} bytes -> {}\n",
                st.size,
                if hidden {
                    describe_bytes(&payload.bytes)
                } else {
                    format!("{} bytes", payload.bytes.len())
                }
            ),
            Some(_) => {
                let old = check(h, &format!("cat -- {}", quote(path)))?;
                content_diff(path, Some(&old.stdout), &payload.bytes, false)
            }
            None => content_diff(path, None, &payload.bytes, hidden),
        };
        out.diff = Some(diff);
    }
    out.change(if cur.is_some() {
        format!("rewrite {path} ({} bytes)", payload.bytes.len())
    } else {
        format!("create {path} ({} bytes)", payload.bytes.len())
    });
    let script = write_script_checked(
        path,
        attrs,
        true,
        Some((payload.bytes.len(), new_sum.as_str())),
    );
    apply(h, &script, super::stdin_bytes(&payload.bytes))?;
    Ok(out)
}

fn remove_path(h: &HostCtx, path: &str, dir: bool) -> StepResult {
    let cur = probe_file(h, path)?;
    let mut out = Outcome::ok();
    plan_remove(path, cur.as_ref().map(|(st, _)| st), dir)?.apply_to(h, &mut out)?;
    Ok(out)
}

/// Turns a content value (string, blob or secret) into bytes.
fn content_of(v: Dynamic) -> Result<Payload, String> {
    if v.is::<Secret>() {
        let s = v.cast::<Secret>();
        return Ok(Payload {
            bytes: s.0.to_vec(),
            secret: true,
        });
    }
    if v.is_blob() {
        return Ok(Payload {
            bytes: v.cast::<rhai::Blob>(),
            secret: false,
        });
    }
    if let Ok(s) = v.clone().into_immutable_string() {
        return Ok(Payload {
            bytes: s.as_bytes().to_vec(),
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
fn stream_from_host(
    h: &HostCtx,
    host: &str,
    src: &str,
    path: &str,
    attrs: &Attrs,
) -> Result<Option<Outcome>, String> {
    super::no_nul("path", src)?;
    super::no_nul("path", path)?;
    let qs = quote(src);
    let out = h
        .exec_on(
            host,
            &in_c_locale(&format!("stat -L -c %s -- {qs} && sha256sum < {qs}")),
            None,
        )
        .map_err(|e| format!("{host}: {e}"))?;
    if out.status != 0 {
        return Err(format!(
            "cannot read {src} on {host}: {}",
            super::failure_text(&out)
        ));
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
    let mut res = Outcome::ok()
        .with("path", path.to_string())
        .with("sha256", sum.clone());
    let create = match plan_content(path, cur.as_ref(), &sum, attrs)? {
        ContentPlan::Keep(fix) => {
            fix.apply_to(h, &mut res)?;
            return Ok(Some(res));
        }
        ContentPlan::Write { create } => create,
    };
    if h.run.reporter.wants_diff() {
        let old = cur
            .as_ref()
            .map(|(st, _)| format!("{} bytes", st.size))
            .unwrap_or_else(|| "absent".into());
        res.diff = Some(format!(
            "--- {path}\n+++ {path}\n  content: {old} -> {size} bytes from {host}:{src} (sha256 {sum})\n"
        ));
    }
    res.change(format!(
        "{} {path} ({size} bytes, streamed from {host}:{src})",
        if create { "create" } else { "rewrite" }
    ));
    if h.run.dry_run {
        return Ok(Some(res));
    }
    let script = write_script_checked(path, attrs, true, Some((size as usize, sum.as_str())));
    let (src_out, dst_out) = h
        .pipe_from(
            host,
            &in_c_locale(&format!("cat -- {qs}")),
            &in_c_locale(&script),
        )
        .map_err(|e| format!("copying {src} from {host}: {e}"))?;
    if dst_out.status != 0 {
        return Err(super::failure_text(&dst_out));
    }
    if src_out.status != 0 {
        return Err(format!(
            "cannot read {src} on {host}: {}",
            super::failure_text(&src_out)
        ));
    }
    Ok(Some(res))
}

/// Reads a whole file of another (or this) host through its connection.
pub fn remote_read(h: &HostCtx, host: &str, path: &str) -> Result<Vec<u8>, String> {
    super::no_nul("path", path)?;
    let out = h
        .exec_on(host, &in_c_locale(&format!("cat -- {}", quote(path))), None)
        .map_err(|e| format!("{host}: {e}"))?;
    if out.status != 0 {
        return Err(format!(
            "cannot read {path} on {host}: {}",
            super::failure_text(&out)
        ));
    }
    Ok(out.stdout)
}

fn do_file(
    ctx: &NativeCallContext,
    path: &str,
    mut m: rhai::Map,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let content = m.remove("content");
    let o: FileOpts = super::opts(ctx, "file", m)?;
    super::step(ctx, "file", path, |h| {
        if o.state == Some(FileState::Absent) {
            return remove_path(h, path, false);
        }
        let mut payload = match (content, &o.src, &o.from_host) {
            (Some(c), None, None) => content_of(c)?,
            (None, Some(src), None) => Payload {
                bytes: controller_file(h, src)?.1,
                secret: false,
            },
            (None, Some(src), Some(host)) => {
                if !o.secret {
                    if let Some(r) = stream_from_host(h, host, src, path, &o.attrs)? {
                        return Ok(r);
                    }
                }
                Payload {
                    bytes: remote_read(h, host, src)?,
                    secret: false,
                }
            }
            (None, None, None) => {
                // Only attributes: the file must exist.
                let st = probe_file(h, path)?.ok_or_else(|| {
                    format!("{path} does not exist: give `content` or `src` to create it")
                })?;
                let mut out = Outcome::ok();
                attr_plan(path, &st.0, &o.attrs).apply_to(h, &mut out)?;
                return Ok(out);
            }
            _ => return Err("give one of content, src, or src with from_host".into()),
        };
        payload.secret |= o.secret;
        ensure_content(h, path, &payload, &o.attrs)
    })
}

/// Options of `directory`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirOpts {
    #[serde(flatten)]
    pub attrs: Attrs,
    pub state: Option<DirState>,
}

fn do_directory(
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
        let mut out = Outcome::ok();
        plan_directory(path, cur.as_ref().map(|(st, _)| st), &o.attrs)?.apply_to(h, &mut out)?;
        Ok(out.with("path", path.to_string()))
    })
}

/// Options of `template`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateOpts {
    #[serde(flatten)]
    pub attrs: Attrs,
    #[serde(default)]
    pub secret: bool,
}

/// Renders a Jinja template (minijinja, undefined variables are errors).
pub fn render(name: &str, text: &str, ctx: &serde_json::Value) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // Configuration files are not HTML: `x.yaml.j2` or `x.json.j2` must not be escaped.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax.keep_trailing_newline(true).trim_blocks(true);
    if let Ok(sc) = syntax.build() {
        env.set_syntax(sc);
    }
    let err = |e: minijinja::Error| template_error_in(&e, Some(text));
    env.add_template(name, text).map_err(err)?;
    let t = env.get_template(name).map_err(err)?;
    t.render(minijinja::value::Serde(ctx)).map_err(err)
}

/// A template error with its line, and the column when the template text is at hand.
pub fn template_error_in(e: &minijinja::Error, text: Option<&str>) -> String {
    let col = match (e.range(), text) {
        (Some(r), Some(t)) if r.start <= t.len() => {
            let line_start = t[..r.start].rfind('\n').map(|i| i + 1).unwrap_or(0);
            Some(t[line_start..r.start].chars().count() + 1)
        }
        _ => None,
    };
    let place = match (e.name(), e.line(), col) {
        (Some(n), Some(l), Some(c)) => format!("{n}:{l}:{c}: "),
        (Some(n), Some(l), None) => format!("{n}:{l}: "),
        (Some(n), None, _) => format!("{n}: "),
        _ => String::new(),
    };
    let mut msg = format!("{place}{}", e.kind());
    if let Some(d) = e.detail() {
        msg.push_str(": ");
        msg.push_str(d);
    }
    if let Some(dbg) = e
        .display_debug_info()
        .to_string()
        .lines()
        .find(|l| l.contains('>'))
    {
        msg.push('\n');
        msg.push_str(dbg.trim_end());
    }
    msg
}

fn do_template(
    ctx: &NativeCallContext,
    dest: &str,
    src: &str,
    mut m: rhai::Map,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let extra = m.remove("vars");
    let o: TemplateOpts = super::opts(ctx, "template", m)?;
    super::step(ctx, "template", dest, |h| {
        let (path, bytes) = controller_file(h, src)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
        let mut vars = h.vars.clone();
        if let Some(e) = extra {
            match e.try_cast::<rhai::Map>() {
                Some(em) => vars.extend(em),
                None => return Err("template option `vars` must be a map".into()),
            }
        }
        let json: serde_json::Value = rhai::serde::from_dynamic(&Dynamic::from_map(vars))
            .map_err(|e| format!("template variables: {e}"))?;
        let rendered = render(src, &text, &json)?;
        ensure_content(
            h,
            dest,
            &Payload {
                bytes: rendered.into_bytes(),
                secret: o.secret,
            },
            &o.attrs,
        )
    })
}

/// Options of `download`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadOpts {
    pub sha256: Option<String>,
    #[serde(flatten)]
    pub attrs: Attrs,
    pub timeout: Option<u64>,
}

fn do_download(
    ctx: &NativeCallContext,
    url: &str,
    dest: &str,
    o: DownloadOpts,
) -> Result<Dynamic, Box<EvalAltResult>> {
    super::step(ctx, "download", dest, |h| {
        super::no_nul("url", url)?;
        super::no_nul("path", dest)?;
        // "" is "not checked", the convention of every `*_sha256` recipe variable.
        let want = o
            .sha256
            .as_ref()
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty());
        if let Some(w) = &want {
            if w.len() != 64 || !w.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!("sha256 {w:?} is not 64 hex digits"));
            }
        }
        let mut out = Outcome::ok().with("path", dest.to_string());
        let cur = probe_file(h, dest)?;
        // Without a sha256 any regular file at `dest` is the download.
        let keep_sum = match (&cur, &want) {
            (Some((_, sum)), None) => sum.clone(),
            (_, Some(w)) => w.clone(),
            (None, None) => String::new(),
        };
        if let ContentPlan::Keep(fix) = plan_content(dest, cur.as_ref(), &keep_sum, &o.attrs)? {
            fix.apply_to(h, &mut out)?;
            return Ok(out.with("sha256", keep_sum));
        }
        out.change(format!("download {url}"));
        let (u, d) = (quote(url), quote(dest));
        let mut s = format!(
            "set -e\nt=$(dirname -- {d}; printf x)\nt=$(mktemp \"${{t%?x}}/.recipe.XXXXXXXX\")\ntrap 'rm -f \"$t\"' EXIT\n\
             if command -v curl >/dev/null 2>&1; then curl -fsSL --retry 3 -o \"$t\" {u}; \
             elif command -v wget >/dev/null 2>&1; then wget -q -O \"$t\" {u}; \
             else echo 'neither curl nor wget is installed on the target' >&2; exit 1; fi\n"
        );
        if let Some(w) = &want {
            s.push_str(&format!(
                "got=$(sha256sum < \"$t\" | cut -d' ' -f1)\n[ \"$got\" = {w} ] || {{ echo \"checksum mismatch: expected {w}, got $got\" >&2; exit 1; }}\n"
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
            &o.attrs,
        );
        for c in cmds {
            s.push_str(&c);
            s.push('\n');
        }
        s.push_str(&format!("mv -f \"$t\" {d}\ntrap - EXIT\n"));
        if !h.run.dry_run {
            let r = h
                .exec(
                    &in_c_locale(&s),
                    None,
                    Some(std::time::Duration::from_secs(o.timeout.unwrap_or(1800))),
                )
                .map_err(|e| e.to_string())?;
            if r.status != 0 {
                return Err(super::failure_text(&r));
            }
        }
        Ok(out)
    })
}

/// Options of `unpack`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnpackOpts {
    pub creates: Option<String>,
    #[serde(default)]
    pub strip_components: u32,
    pub owner: Option<String>,
}

fn do_unpack(
    ctx: &NativeCallContext,
    archive: &str,
    dest: &str,
    o: UnpackOpts,
) -> Result<Dynamic, Box<EvalAltResult>> {
    super::step(ctx, "unpack", dest, |h| {
        super::no_nul("path", archive)?;
        super::no_nul("path", dest)?;
        let marker = o.creates.clone().unwrap_or_else(|| dest.to_string());
        let (a, d, m) = (quote(archive), quote(dest), quote(&marker));
        let probe = check(h, &format!("if [ -e {m} ]; then echo present; else echo absent; fi; [ -f {a} ] && echo archive || echo noarchive"))?;
        let text = probe.stdout_str();
        let mut out = Outcome::ok().with("path", dest.to_string());
        if text.starts_with("present") {
            return Ok(out);
        }
        if !text.contains("noarchive") || h.run.dry_run {
            out.change(format!("unpack {archive} into {dest}"));
        } else {
            return Err(format!("archive {archive} does not exist"));
        }
        let mut cmd = format!("mkdir -p -- {d} && tar -xf {a} -C {d} --no-same-owner");
        if o.strip_components > 0 {
            cmd.push_str(&format!(" --strip-components={}", o.strip_components));
        }
        if let Some(owner) = &o.owner {
            cmd.push_str(&format!(" && chown -R {} {d}", quote(owner)));
        }
        apply(h, &cmd, None)?;
        Ok(out)
    })
}

/// Options of `read_file`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadOpts {
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub binary: bool,
}

/// read_file for this or another host: string, blob, or secret.
pub fn read_value(
    ctx: &NativeCallContext,
    host: Option<&str>,
    path: &str,
    o: ReadOpts,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let h = super::host_ctx(ctx)?;
    let who = host.map(str::to_string).unwrap_or_else(|| h.name.clone());
    let bytes = remote_read(&h, &who, path).map_err(|e| super::err_at(e, ctx.call_position()))?;
    if o.secret {
        h.run.reporter.redactor().add(&bytes);
        return Ok(Dynamic::from(Secret(std::sync::Arc::new(bytes))));
    }
    if o.binary {
        return Ok(Dynamic::from_blob(bytes));
    }
    String::from_utf8(bytes).map(Dynamic::from).map_err(|_| {
        super::err_at(
            format!("{path} on {who} is not UTF-8 text; use #{{binary: true}}"),
            ctx.call_position(),
        )
    })
}

/// stat for this or another host: a map, or () when the path does not exist.
pub fn stat_value(
    ctx: &NativeCallContext,
    host: Option<&str>,
    path: &str,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let h = super::host_ctx(ctx)?;
    let who = host.map(str::to_string).unwrap_or_else(|| h.name.clone());
    let q = quote(path);
    let out = h
        .exec_on(
            &who,
            &in_c_locale(&format!(
                "if [ -e {q} ] || [ -L {q} ]; then stat -c '{STAT_FMT}' -- {q}; else echo absent; fi"
            )),
            None,
        )
        .map_err(|e| super::err_at(format!("stat {path}: {e}"), ctx.call_position()))?;
    if out.status != 0 {
        return Err(super::err_at(
            format!("stat {path} on {who}: {}", super::failure_text(&out)),
            ctx.call_position(),
        ));
    }
    let text = out.stdout_str();
    if text.trim() == "absent" {
        return Ok(Dynamic::UNIT);
    }
    let st = parse_stat(&text).ok_or_else(|| {
        super::err_at(
            format!("stat {path}: cannot parse {text:?}"),
            ctx.call_position(),
        )
    })?;
    let mut m = rhai::Map::new();
    m.insert("kind".into(), st.kind_name().into());
    m.insert("owner".into(), st.owner.into());
    m.insert("group".into(), st.group.into());
    m.insert("mode".into(), format!("{:04o}", st.mode).into());
    m.insert("size".into(), (st.size as i64).into());
    Ok(Dynamic::from_map(m))
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
        let o: DirOpts = crate::primitives::opts(&ctx, "directory", opts)?;
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

    /// Downloads a URL on the target (curl or wget) unless `dest` already exists (with
    /// the given `sha256`, if one is given; `""` is not checked). Options: `sha256`, `owner`, `group`, `mode`, `timeout`.
    ///
    /// ```rhai
    /// download(vars.slurm_url, "/usr/local/src/slurm.tar.gz", #{sha256: vars.slurm_sha256});
    /// ```
    #[rhai_fn(name = "download", return_raw)]
    pub fn download(
        ctx: NativeCallContext,
        url: &str,
        dest: &str,
        opts: rhai::Map,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let o: DownloadOpts = crate::primitives::opts(&ctx, "download", opts)?;
        do_download(&ctx, url, dest, o)
    }

    /// Downloads a URL on the target unless `dest` exists.
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
        let o: UnpackOpts = crate::primitives::opts(&ctx, "unpack", opts)?;
        do_unpack(&ctx, archive, dest, o)
    }

    /// Reads a text file of the target. Not a step; runs in dry runs.
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
        let o: ReadOpts = crate::primitives::opts(&ctx, "read_file", opts)?;
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

    /// Whether a path exists on the target.
    #[rhai_fn(name = "exists", return_raw)]
    pub fn exists(ctx: NativeCallContext, path: &str) -> Result<bool, Box<EvalAltResult>> {
        Ok(!stat_value(&ctx, None, path)?.is_unit())
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
}
