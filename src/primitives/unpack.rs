//! `unpack`: a tar archive on the target unpacked into a folder unless its marker exists.

use rhai::plugin::*;

use super::*;
use crate::planned::{PlannedContent, PlannedFile};
use crate::transport::quote;

crate::primitives::options::options! {
    /// Options of `unpack`.
    pub struct UnpackOpts for "unpack" {
        creates: Option<String>,
        strip_components: u32,
        owner: Option<String>,
    }
}

/// What `unpack` finds: whether its marker (`creates`, default `dest`) exists, whether the
/// archive does, or where a step of this run plans it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackFacts {
    pub marker: bool,
    pub archive: bool,
    /// The archive is not there yet, and this step of the run makes it.
    pub planned_archive: Option<String>,
}

/// The decision of `unpack`.
pub fn unpack_step<'a>(
    archive: &str,
    dest: &str,
    f: &UnpackFacts,
    o: &UnpackOpts,
) -> StepResult<'a> {
    let marker = o.creates.clone().unwrap_or_else(|| dest.to_string());
    let plan = StepPlan::ok()
        .with("path", dest.to_string())
        .same_as(format!("{archive} {o:?}"));
    if f.marker {
        return Ok(plan);
    }
    let mut change = format!("unpack {archive} into {dest}");
    if !f.archive {
        match &f.planned_archive {
            Some(dep) => change.push_str(&format!(" ({dep})")),
            None => return Err(format!("archive {archive} does not exist").into()),
        }
    }
    let (a, d) = (quote(archive), quote(dest));
    let mut cmd = format!(
        "{}mkdir -p -- {d} && tar -xf {a} -C {d} --no-same-owner",
        unpack_needs(archive)
    );
    if o.strip_components > 0 {
        cmd.push_str(&format!(" --strip-components={}", o.strip_components));
    }
    if let Some(owner) = &o.owner {
        cmd.push_str(&format!(" && chown -R {} {d}", quote(owner)));
    }
    let mut p = StepPlan::script(vec![change], cmd, None, None);
    p.result = plan.result;
    p.identity = plan.identity;
    Ok(p.writes(&marker, PlannedFile::new(PlannedContent::Unknown, "")))
}

/// tar runs a decompressor a minimal host may lack (debootstrap minbase has gzip only):
/// say which package is missing before anything is unpacked.
pub(crate) fn unpack_needs(archive: &str) -> String {
    let a = archive.to_ascii_lowercase();
    let need = [
        (&[".xz", ".txz"][..], "xz", "xz-utils"),
        (&[".bz2", ".tbz2", ".tbz"][..], "bzip2", "bzip2"),
        (&[".zst", ".tzst"][..], "zstd", "zstd"),
        (&[".lz4"][..], "lz4", "lz4"),
    ];
    for (ends, tool, pkg) in need {
        if ends.iter().any(|e| a.ends_with(e)) {
            return format!(
                "if ! command -v {tool} >/dev/null 2>&1; then echo {} >&2; exit 1; fi; ",
                quote(&format!(
                    "{archive} needs {tool}, which is not installed on this host: install it first (packages([\"{pkg}\"]))"
                ))
            );
        }
    }
    String::new()
}

pub(crate) fn do_unpack(
    ctx: &NativeCallContext,
    archive: &str,
    dest: &str,
    o: UnpackOpts,
) -> Result<Dynamic, Box<EvalAltResult>> {
    super::step(ctx, "unpack", dest, |h| {
        super::no_nul("path", archive)?;
        super::no_nul("path", dest)?;
        let marker = o.creates.clone().unwrap_or_else(|| dest.to_string());
        let (a, m) = (quote(archive), quote(&marker));
        let probe = check(h, &format!("if [ -e {m} ]; then echo present; else echo absent; fi; [ -f {a} ] && echo archive || echo noarchive"))?;
        let text = probe.stdout_str();
        let archive_there = !text.contains("noarchive");
        let f = UnpackFacts {
            marker: text.starts_with("present"),
            archive: archive_there,
            planned_archive: if archive_there {
                None
            } else {
                super::planned_file(h, &h.name, archive)
                    .filter(|pf| pf.content != PlannedContent::Absent)
                    .map(|pf| pf.depends(&h.name, archive))
            },
        };
        unpack_step(archive, dest, &f, &o)
    })
}
