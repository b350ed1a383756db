//! Reading without changing: `read_file`, `stat`, `exists` and `require`, on this host or
//! another, seeing what earlier steps of a dry run plan.

use super::StepError;
use rhai::plugin::*;

use super::*;
use crate::context::HostCtx;
use crate::planned::{PlannedContent, PlannedFile};
use crate::secrets::Secret;
use crate::transport::quote;

/// A file of `host` as this run sees it: what is there, or what a dry-run step of this run
/// plans to write there.
pub enum Remote {
    Bytes(Vec<u8>),
    /// Planned, with content that exists only once that step has run.
    Pending(PlannedFile),
}

/// Reads a whole file of another (or this) host, or what this run plans for it.
pub fn read_remote(h: &HostCtx, host: &str, path: &str) -> Result<Remote, StepError> {
    super::no_nul("path", path)?;
    if let Some(pf) = super::planned_file(h, host, path) {
        return match pf.content {
            PlannedContent::Bytes { ref bytes, .. } => Ok(Remote::Bytes(bytes.to_vec())),
            PlannedContent::Unknown => Ok(Remote::Pending(pf)),
            PlannedContent::Directory => Err(StepError::Refused(format!(
                "cannot read {path} on {host}: a directory is planned there (at {})",
                pf.at
            ))),
            PlannedContent::Absent => Err(StepError::Refused(format!(
                "cannot read {path} on {host}: it is planned to be removed (at {})",
                pf.at
            ))),
        };
    }
    remote_read(h, host, path).map(Remote::Bytes)
}

/// Reads a whole file of another (or this) host through its connection.
pub fn remote_read(h: &HostCtx, host: &str, path: &str) -> Result<Vec<u8>, StepError> {
    super::no_nul("path", path)?;
    let out = h
        .exec_on(host, &in_c_locale(&format!("cat -- {}", quote(path))), None)
        .map_err(|e| StepError::from(e).doing(host))?;
    if out.status != 0 {
        return Err(StepError::command(&out).doing(format!("cannot read {path} on {host}")));
    }
    Ok(out.stdout)
}

crate::primitives::options::options! {
    /// Options of `read_file`.
    pub struct ReadOpts for "read_file" {
        secret: bool,
        binary: bool,
    }
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
    let bytes = match read_remote(&h, &who, path) {
        Ok(Remote::Bytes(b)) => b,
        Ok(Remote::Pending(pf)) => {
            // Not a value anyone can know before that step runs: say so, and read nothing.
            h.run.reporter.note(
                &h.name,
                &format!(
                    "read_file {who}:{path} at {}:{}: {}; read as empty",
                    super::call_file(ctx, &h).unwrap_or_else(|| h.recipe.name.clone()),
                    ctx.call_position().line().unwrap_or(0),
                    pf.depends(&who, path)
                ),
            );
            Vec::new()
        }
        Err(e) => return Err(super::err_at(e.to_string(), ctx.call_position())),
    };
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

/// What `stat` shows of a path that a step of this run plans (`planned`), from what is
/// there (`cur`): the planned kind, size and attributes over the current ones.
pub fn planned_stat(cur: Option<StatInfo>, planned: Option<&PlannedFile>) -> Option<StatInfo> {
    let Some(pf) = planned else {
        return cur;
    };
    let (kind, size, mode) = match &pf.content {
        PlannedContent::Absent => return None,
        PlannedContent::Directory => (FileKind::Directory, 4096, 0o755),
        PlannedContent::Bytes { bytes, .. } => (FileKind::Regular, bytes.len() as u64, 0o644),
        PlannedContent::Unknown => (
            FileKind::Regular,
            cur.as_ref().map(|c| c.size).unwrap_or(0),
            0o644,
        ),
    };
    let base = cur.filter(|c| c.kind == kind).unwrap_or(StatInfo {
        kind,
        owner: "root".into(),
        group: "root".into(),
        mode,
        size,
    });
    Some(StatInfo {
        kind,
        owner: pf.owner.clone().unwrap_or(base.owner),
        group: pf.group.clone().unwrap_or(base.group),
        mode: pf.mode.unwrap_or(base.mode),
        size,
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
            StepError::command(&out)
                .doing(format!("stat {path} on {who}"))
                .to_string(),
            ctx.call_position(),
        ));
    }
    let text = out.stdout_str();
    let cur = if text.trim() == "absent" {
        None
    } else {
        Some(parse_stat(&text).ok_or_else(|| {
            super::err_at(
                format!("stat {path}: cannot parse {text:?}"),
                ctx.call_position(),
            )
        })?)
    };
    let planned = super::planned_file(&h, &who, path);
    let Some(st) = planned_stat(cur, planned.as_ref()) else {
        return Ok(Dynamic::UNIT);
    };
    let mut m = rhai::Map::new();
    if let Some(pf) = &planned {
        m.insert("planned".into(), pf.at.clone().into());
    }
    m.insert("kind".into(), st.kind_name().into());
    m.insert("owner".into(), st.owner.into());
    m.insert("group".into(), st.group.into());
    m.insert("mode".into(), format!("{:04o}", st.mode).into());
    m.insert("size".into(), (st.size as i64).into());
    Ok(Dynamic::from_map(m))
}

/// `require`: whether `path` is there (on this host or `host`), or planned by an earlier step of
/// this dry run. Missing: a real run stops with `message`; a dry run, where earlier steps may
/// only have been reported, says what a real run would need and returns false.
pub fn require_value(
    ctx: &NativeCallContext,
    host: Option<&str>,
    path: &str,
    message: &str,
) -> Result<bool, Box<EvalAltResult>> {
    if !stat_value(ctx, host, path)?.is_unit() {
        return Ok(true);
    }
    let h = super::host_ctx(ctx)?;
    let who = host.unwrap_or(&h.name);
    if !h.run.dry_run {
        return Err(super::err_at(
            format!("{message} ({who}:{path} does not exist)"),
            ctx.call_position(),
        ));
    }
    h.run.reporter.note(
        &h.name,
        &format!(
            "{who}:{path} is not there and no step of this run plans it (a command of an earlier step may make it); \
             if it is still missing, a real run stops at {}:{}: {message}",
            super::call_file(ctx, &h).unwrap_or_else(|| h.recipe.name.clone()),
            ctx.call_position().line().unwrap_or(0),
        ),
    );
    Ok(false)
}
