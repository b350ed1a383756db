//! Packages through the target's package manager (apt, or dnf/yum), checked in one query.

use rhai::plugin::*;

use super::{check, Plan, Presence, StepPlan};
use crate::transport::quote;

crate::primitives::options::options! {
    /// Options of `packages`.
    pub struct PkgOpts for "packages" {
        state: Option<Presence>,
        update_cache: bool,
        /// `false`: the packages' services are not started (or restarted) by the install.
        start_services: Option<bool>,
    }
}

/// What the target's package manager says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkgFacts {
    /// "apt", "dnf" or "yum".
    pub mgr: String,
    /// Of the names asked about, those installed.
    pub installed: Vec<String>,
    /// Whether apt has package lists (a fresh host has none: `apt-get update` first).
    pub has_lists: bool,
}

/// One round trip: the manager, then `NAME STATUS` lines. dpkg's `db:Status-Abbrev` and the
/// fixed `ii` printed for what rpm finds are codes, not words: no locale changes them (rpm's
/// "package x is not installed", which is translated, is filtered out).
fn query_cmd(names: &[String]) -> String {
    let list = names.iter().map(|n| quote(n)).collect::<Vec<_>>().join(" ");
    format!(
        "if command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then echo apt; \
         l=nolists; for f in /var/lib/apt/lists/*_Packages*; do [ -e \"$f\" ] && l=lists; break; done; echo $l; \
         dpkg-query -W -f='${{Package}} ${{db:Status-Abbrev}}\\n' {list} 2>/dev/null; \
         elif command -v dnf >/dev/null 2>&1; then echo dnf; echo lists; rpm -q --qf '%{{NAME}} ii\\n' {list} 2>/dev/null | grep ' ii$'; \
         elif command -v yum >/dev/null 2>&1; then echo yum; echo lists; rpm -q --qf '%{{NAME}} ii\\n' {list} 2>/dev/null | grep ' ii$'; \
         else echo none; fi; true"
    )
}

/// Reads the output of [`query_cmd`].
pub fn parse_query(text: &str) -> Result<PkgFacts, String> {
    let mut lines = text.lines();
    let mgr = lines.next().unwrap_or("none").trim().to_string();
    if !matches!(mgr.as_str(), "apt" | "dnf" | "yum") {
        return Err(
            "no supported package manager on the target (apt-get with dpkg-query, dnf or yum): \
             install one, or install the packages with sh()"
                .into(),
        );
    }
    let has_lists = lines.next().map(|l| l.trim() == "lists").unwrap_or(false);
    let mut installed = Vec::new();
    for l in lines {
        let mut p = l.split_whitespace();
        if let (Some(name), Some(st)) = (p.next(), p.next()) {
            // Wanted "install" or "hold", and the package is "installed".
            if st.starts_with("ii") || st.starts_with("hi") {
                // dpkg prints arch-qualified names for multi-arch packages.
                let name = name.split(':').next().unwrap_or(name).to_string();
                if !installed.contains(&name) {
                    installed.push(name);
                }
            }
        }
    }
    Ok(PkgFacts {
        mgr,
        installed,
        has_lists,
    })
}

/// Wraps an apt command so that packages' maintainer scripts do not start or restart
/// services (Debian's policy-rc.d, which `invoke-rc.d` and `deb-systemd-invoke` ask; exit
/// 101 = not allowed). The file allows everything again as soon as the shell that wrote it
/// is gone, so a run killed mid-install cannot keep services from starting later; it is
/// removed when the install ends. A policy-rc.d the site put there is left alone.
fn hold_services(cmd: &str) -> String {
    let p = "/usr/sbin/policy-rc.d";
    let mark = "# recipe: packages(start_services: false)";
    let policy = format!(
        "#!/bin/sh\\n{mark}: no service starts while process %s installs.\\n\
         kill -0 %s 2>/dev/null && exit 101\\nexit 0\\n"
    );
    format!(
        "(p={p}; mine=; \
         if [ ! -e $p ] || grep -qF '{mark}' $p; then \
         printf '{policy}' $$ $$ > $p && chmod 0755 $p && mine=1; fi; \
         trap '[ -n \"$mine\" ] && rm -f $p' EXIT; \
         trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM; \
         {cmd})"
    )
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

/// The decision table of `packages`: the packages to install (or remove) and the one command
/// that does it. An empty plan: nothing to do.
pub fn plan_packages(
    names: &[String],
    f: &PkgFacts,
    state: Presence,
    update_cache: bool,
    start_services: bool,
) -> (Vec<String>, Plan) {
    let absent = state == Presence::Absent;
    let mut todo: Vec<String> = Vec::new();
    for n in names {
        if f.installed.contains(n) == absent && !todo.contains(n) {
            todo.push(n.clone());
        }
    }
    let mut p = Plan::default();
    if todo.is_empty() {
        return (todo, p);
    }
    let list = todo.iter().map(|n| quote(n)).collect::<Vec<_>>().join(" ");
    let mut what = format!(
        "{} {}",
        if absent { "remove" } else { "install" },
        todo.join(" ")
    );
    let cmd = match (f.mgr.as_str(), absent) {
        ("apt", false) => apt_install(&list, update_cache || !f.has_lists),
        ("apt", true) => format!(
            "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 remove {list}"
        ),
        // dnf and yum packages do not start services at install.
        (m, false) => format!("{m} -y install {list}"),
        (m, true) => format!("{m} -y remove {list}"),
    };
    let cmd = if !start_services && !absent && f.mgr == "apt" {
        what.push_str(" (their services not started)");
        hold_services(&cmd)
    } else {
        cmd
    };
    p.add(what, cmd);
    (todo, p)
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
                return Err(format!("bad package name {n:?}").into());
            }
        }
        let facts = parse_query(&check(h, &query_cmd(&names))?.stdout_str())?;
        let state = o.state.unwrap_or(Presence::Present);
        let start = o.start_services.unwrap_or(true);
        let (todo, plan) = plan_packages(&names, &facts, state, o.update_cache, start);
        let arr: rhai::Array = todo.iter().map(|s| Dynamic::from(s.clone())).collect();
        Ok(StepPlan::from(plan)
            .with("packages", arr)
            .same_as(format!("{:?} {} {}", state, o.update_cache, start)))
    })
}

#[export_module]
pub mod api {
    use super::*;

    /// Ensures packages are installed (or, with `state: "absent"`, removed) with the
    /// target's package manager (apt; dnf or yum on Red Hat-like hosts). Checks all of
    /// them in one query; installs only the missing ones, in one transaction.
    /// Options: `state` ("present" | "absent"; any other value is an error before the host
    /// is touched), `update_cache` (refresh lists first), `start_services` (`false`: the
    /// packages' own scripts start or restart no service, like Ansible apt's
    /// `policy_rc_d: 101`; for daemons a later step configures and starts; apt only, since
    /// dnf and yum do not start services at install).
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
        let o: PkgOpts = crate::primitives::opts(&ctx, opts)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    /// The query answers as it did when it listed the apt lists with `ls | grep` (two
    /// processes the shell's glob now spares), on this machine's own lists.
    #[test]
    fn the_query_answers_as_with_ls_and_grep() {
        let run = |cmd: String| {
            std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(crate::primitives::in_c_locale(&cmd))
                .output()
                .expect("sh runs")
                .stdout
        };
        let n = names(&["coreutils", "no-such-package-h4q"]);
        let new = query_cmd(&n);
        let old = new.replace(
            "l=nolists; for f in /var/lib/apt/lists/*_Packages*; do [ -e \"$f\" ] && l=lists; break; done; echo $l;",
            "ls /var/lib/apt/lists/ 2>/dev/null | grep -q '_Packages' && echo lists || echo nolists;",
        );
        assert_ne!(new, old);
        assert_eq!(run(new), run(old));
    }

    #[test]
    fn reads_dpkg_and_rpm_answers() {
        // dpkg: installed, held, removed with its config left, unpacked only, multi-arch.
        let f = parse_query(
            "apt\nlists\nmunge ii \nslurmd hi \nold rc \nhalf iU \nlibc6:amd64 ii \nlibc6:i386 ii \n",
        )
        .unwrap();
        assert_eq!(f.mgr, "apt");
        assert!(f.has_lists);
        assert_eq!(f.installed, names(&["munge", "slurmd", "libc6"]));
        let f = parse_query("apt\nnolists\n").unwrap();
        assert!(!f.has_lists && f.installed.is_empty());
        let f = parse_query("dnf\nlists\nmunge ii\n").unwrap();
        assert_eq!(
            (f.mgr.as_str(), f.installed.clone()),
            ("dnf", names(&["munge"]))
        );
        let e = parse_query("none\n").unwrap_err();
        assert!(e.contains("no supported package manager"), "{e}");
    }

    #[test]
    fn install_and_remove_table() {
        let apt = PkgFacts {
            mgr: "apt".into(),
            installed: names(&["munge"]),
            has_lists: true,
        };
        let want = names(&["munge", "libmunge2", "munge"]);
        // Present: only the missing ones, once, in one transaction.
        let (todo, p) = plan_packages(&want, &apt, Presence::Present, false, true);
        assert_eq!(todo, names(&["libmunge2"]));
        assert_eq!(p.changes, ["install libmunge2"]);
        assert_eq!(p.cmds.len(), 1);
        assert!(
            p.cmds[0].contains("install --no-install-recommends libmunge2 ||"),
            "{}",
            p.cmds[0]
        );
        // Absent: only the installed ones.
        let (todo, p) = plan_packages(&want, &apt, Presence::Absent, false, true);
        assert_eq!(todo, names(&["munge"]));
        assert!(p.cmds[0].ends_with("remove munge"), "{}", p.cmds[0]);
        // Nothing to do.
        let (todo, p) = plan_packages(&names(&["munge"]), &apt, Presence::Present, false, true);
        assert!(todo.is_empty() && p.is_empty());
        // No lists yet, or asked: update first.
        let fresh = PkgFacts {
            has_lists: false,
            ..apt.clone()
        };
        let (_, p) = plan_packages(&names(&["tree"]), &fresh, Presence::Present, false, true);
        assert!(
            p.cmds[0].starts_with("apt-get -q -o DPkg::Lock::Timeout=300 update && "),
            "{}",
            p.cmds[0]
        );
        let (_, p) = plan_packages(&names(&["tree"]), &apt, Presence::Present, true, true);
        assert!(
            p.cmds[0].starts_with("apt-get -q -o DPkg::Lock::Timeout=300 update && "),
            "{}",
            p.cmds[0]
        );
        // dnf and yum.
        let dnf = PkgFacts {
            mgr: "dnf".into(),
            ..apt.clone()
        };
        let (_, p) = plan_packages(&names(&["tree"]), &dnf, Presence::Present, false, true);
        assert_eq!(p.cmds, ["dnf -y install tree"]);
        let (_, p) = plan_packages(&names(&["munge"]), &dnf, Presence::Absent, false, true);
        assert_eq!(p.cmds, ["dnf -y remove munge"]);
        // start_services: false holds services around an apt install only.
        let (_, p) = plan_packages(&names(&["slurmd"]), &apt, Presence::Present, false, false);
        assert_eq!(p.changes, ["install slurmd (their services not started)"]);
        let c = &p.cmds[0];
        assert!(c.starts_with("(p=/usr/sbin/policy-rc.d; "), "{c}");
        assert!(
            c.contains("exit 101") && c.contains("trap '[ -n \"$mine\" ] && rm -f $p' EXIT"),
            "{c}"
        );
        assert!(
            c.ends_with("install --no-install-recommends slurmd; })"),
            "{c}"
        );
        let (_, p) = plan_packages(&names(&["munge"]), &apt, Presence::Absent, false, false);
        assert_eq!(p.changes, ["remove munge"]);
        let (_, p) = plan_packages(&names(&["tree"]), &dnf, Presence::Present, false, false);
        assert_eq!(p.cmds, ["dnf -y install tree"]);
    }

    /// The held install, run by a real shell with the policy file in a scratch folder: no
    /// service may start while it runs, the file is gone after it, and a file left by a
    /// killed install allows everything.
    #[test]
    fn held_install_in_a_real_shell() {
        let dir = tempfile::tempdir().unwrap();
        let pol = dir.path().join("policy-rc.d");
        let pol_s = pol.to_str().unwrap();
        let apt = PkgFacts {
            mgr: "apt".into(),
            installed: vec![],
            has_lists: true,
        };
        let (_, p) = plan_packages(&names(&["x"]), &apt, Presence::Present, false, false);
        // Where the wrapped apt command starts: the test runs the wrapper around its own.
        let pos = p.cmds[0].find(&apt_install("x", false)).unwrap();
        // The "install" asks the policy what a package's script would, and records it.
        let probe = format!("{pol_s} slurmd start; echo during=$?; false");
        let script =
            p.cmds[0][..pos].replace("/usr/sbin/policy-rc.d", pol_s) + probe.as_str() + ")";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("during=101"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "the install's failure is the step's");
        assert!(!pol.exists(), "the policy file outlived the install");
        // Left by a process that is gone: allows (0); a site's own file is kept.
        std::fs::write(&pol, "#!/bin/sh\n# recipe: packages(start_services: false): x\nkill -0 999999999 2>/dev/null && exit 101\nexit 0\n").unwrap();
        let st = std::process::Command::new("sh").arg(&pol).status().unwrap();
        assert_eq!(st.code(), Some(0));
        std::fs::write(&pol, "#!/bin/sh\nexit 101\n").unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(p.cmds[0][..pos].replace("/usr/sbin/policy-rc.d", pol_s) + "true)")
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            std::fs::read_to_string(&pol).unwrap(),
            "#!/bin/sh\nexit 101\n"
        );
    }
}
