//! Packages through the target's package manager (apt, or dnf/yum), checked in one query.

use rhai::plugin::*;

use super::{apply, check, Outcome};
use crate::host::HostCtx;
use crate::transport::quote;

/// Options of `packages`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkgOpts {
    pub state: Option<String>,
    #[serde(default)]
    pub update_cache: bool,
}

/// Which manager the target has, and which of `names` are installed: one round trip.
fn query(h: &HostCtx, names: &[String]) -> Result<(String, Vec<String>, bool), String> {
    let list = names.iter().map(|n| quote(n)).collect::<Vec<_>>().join(" ");
    let cmd = format!(
        "if command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then echo apt; \
         ls /var/lib/apt/lists/ 2>/dev/null | grep -q '_Packages' && echo lists || echo nolists; \
         dpkg-query -W -f='${{Package}} ${{db:Status-Abbrev}}\\n' {list} 2>/dev/null; \
         elif command -v dnf >/dev/null 2>&1; then echo dnf; echo lists; rpm -q --qf '%{{NAME}} ii\\n' {list} 2>/dev/null | grep ' ii$'; \
         elif command -v yum >/dev/null 2>&1; then echo yum; echo lists; rpm -q --qf '%{{NAME}} ii\\n' {list} 2>/dev/null | grep ' ii$'; \
         else echo none; fi; true"
    );
    let out = check(h, &cmd)?;
    let text = out.stdout_str();
    let mut lines = text.lines();
    let mgr = lines.next().unwrap_or("none").trim().to_string();
    if mgr == "none" {
        return Err("no supported package manager (apt-get, dnf, yum) on the target".into());
    }
    let has_lists = lines.next().map(|l| l.trim() == "lists").unwrap_or(false);
    let mut installed = Vec::new();
    for l in lines {
        let mut p = l.split_whitespace();
        if let (Some(name), Some(st)) = (p.next(), p.next()) {
            if st.starts_with("ii") || st.starts_with("hi") {
                // dpkg prints arch-qualified names for multi-arch packages.
                installed.push(name.split(':').next().unwrap_or(name).to_string());
            }
        }
    }
    Ok((mgr, installed, has_lists))
}

fn apt_install(pkgs: &str, update: bool) -> String {
    let base = "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";
    let upd = "apt-get -q -o DPkg::Lock::Timeout=300 update";
    if update {
        format!("{upd} && {base} install --no-install-recommends {pkgs}")
    } else {
        // Stale lists are the usual reason for "Unable to locate": refresh once and retry.
        format!("{base} install --no-install-recommends {pkgs} || {{ {upd} && {base} install --no-install-recommends {pkgs}; }}")
    }
}

fn do_packages(
    ctx: &NativeCallContext,
    names: Vec<String>,
    o: PkgOpts,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let label = names.join(" ");
    super::step(ctx, "packages", &label, |h| {
        for n in &names {
            if n.is_empty()
                || n.starts_with('-')
                || n.contains(char::is_whitespace)
                || n.contains('\0')
            {
                return Err(format!("bad package name {n:?}"));
            }
        }
        let (mgr, installed, has_lists) = query(h, &names)?;
        let absent = matches!(o.state.as_deref(), Some("absent"));
        match o.state.as_deref() {
            None | Some("present") | Some("absent") => {}
            Some(s) => {
                return Err(format!(
                    "state must be \"present\" or \"absent\", not {s:?}"
                ))
            }
        }
        let todo: Vec<String> = names
            .iter()
            .filter(|n| installed.contains(n) == absent)
            .cloned()
            .collect();
        let mut out = Outcome::ok();
        let arr: rhai::Array = todo.iter().map(|s| Dynamic::from(s.clone())).collect();
        out.result.insert("packages".into(), arr.into());
        if todo.is_empty() {
            return Ok(out);
        }
        let list = todo.iter().map(|n| quote(n)).collect::<Vec<_>>().join(" ");
        let cmd = match (mgr.as_str(), absent) {
            ("apt", false) => {
                out.change(format!("install {}", todo.join(" ")));
                apt_install(&list, o.update_cache || !has_lists)
            }
            ("apt", true) => {
                out.change(format!("remove {}", todo.join(" ")));
                format!("DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 remove {list}")
            }
            (m, false) => {
                out.change(format!("install {}", todo.join(" ")));
                format!("{m} -y install {list}")
            }
            (m, true) => {
                out.change(format!("remove {}", todo.join(" ")));
                format!("{m} -y remove {list}")
            }
        };
        apply(h, &cmd, None)?;
        Ok(out)
    })
}

#[export_module]
pub mod api {
    use super::*;

    /// Ensures packages are installed (or, with `state: "absent"`, removed) with the
    /// target's package manager (apt; dnf or yum on Red Hat-like hosts). Checks all of
    /// them in one query; installs only the missing ones, in one transaction.
    /// Options: `state` ("present" | "absent"), `update_cache` (refresh lists first).
    /// Returns `#{changed, packages}` (the packages installed or removed).
    ///
    /// ```rhai
    /// packages(["munge", "libmunge-dev", "libmunge2"]);
    /// ```
    #[rhai_fn(name = "packages", return_raw)]
    pub fn packages(
        ctx: NativeCallContext,
        names: rhai::Array,
        opts: rhai::Map,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let o: PkgOpts = crate::primitives::opts(&ctx, "packages", opts)?;
        let names = strings(&ctx, names)?;
        do_packages(&ctx, names, o)
    }

    /// Ensures packages are installed.
    #[rhai_fn(name = "packages", return_raw)]
    pub fn packages1(
        ctx: NativeCallContext,
        names: rhai::Array,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let names = strings(&ctx, names)?;
        do_packages(&ctx, names, PkgOpts::default())
    }
}

/// An array of strings from Rhai, or an error naming the bad element.
pub fn strings(ctx: &NativeCallContext, a: rhai::Array) -> Result<Vec<String>, Box<EvalAltResult>> {
    a.into_iter()
        .map(|v| {
            v.clone()
                .into_immutable_string()
                .map(|s| s.to_string())
                .map_err(|t| {
                    super::err_at(
                        format!("expected a list of strings, found a {t}"),
                        ctx.call_position(),
                    )
                })
        })
        .collect()
}
