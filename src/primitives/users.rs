//! Users and groups: system or not, fixed UID/GID (the same on every node), home, shell.

use rhai::plugin::*;

use super::{check, Plan, Presence, StepPlan};
use crate::transport::quote;

crate::primitives::options::options! {
    /// Options of `user`.
    pub struct UserOpts for "user" {
        uid: Option<u32>,
        group: Option<String>,
        groups: Vec<String>,
        home: Option<String>,
        shell: Option<String>,
        system: bool,
        create_home: bool,
        comment: Option<String>,
        state: Option<Presence>,
    }
}

crate::primitives::options::options! {
    /// Options of `group`.
    pub struct GroupOpts for "group" {
        gid: Option<u32>,
        system: bool,
        state: Option<Presence>,
    }
}

fn valid_name(n: &str) -> Result<(), String> {
    if n.is_empty()
        || n.starts_with('-')
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-$".contains(c))
    {
        return Err(format!(
            "bad user or group name {n:?}: use letters, digits, '.', '_', '-' (not first) or a final '$'"
        ));
    }
    Ok(())
}

/// An account as the name service database has it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserFacts {
    pub uid: u32,
    pub gid: u32,
    /// The primary group's name (its number when it has none).
    pub primary: String,
    /// Every group the account is in, primary included, by name.
    pub groups: Vec<String>,
    pub home: String,
    pub shell: String,
}

/// `getent` exits 2 when the key is not found: the exit status says "absent", never a message.
fn getent_absent_or_fail(db: &str) -> String {
    format!(
        "rc=$?; if [ $rc -eq 2 ]; then echo absent; exit 0; fi; \
         echo \"getent {db} failed with exit status $rc\" >&2; exit $rc"
    )
}

/// One round trip: the passwd entry, the primary group's name and all groups, as
/// `key value` lines (or `absent`). The fields are cut by the shell, not by `cut`: three
/// processes (two `getent`, `id`) and two substitutions in all.
fn user_query(q: &str) -> String {
    format!(
        "pw=$(getent passwd {q}) || {{ {} ; }}\n\
         printf 'passwd %s\\n' \"$pw\"\n\
         r=${{pw#*:*:*:}}; g=$(getent group \"${{r%%:*}}\")\n\
         printf 'primary %s\\n' \"${{g%%:*}}\"\n\
         printf 'groups '; id -Gn {q} 2>/dev/null; echo",
        getent_absent_or_fail("passwd")
    )
}

/// Reads the output of [`user_query`]: `None` when the account does not exist.
pub fn parse_user(text: &str) -> Result<Option<UserFacts>, String> {
    if text.trim() == "absent" {
        return Ok(None);
    }
    let mut f = UserFacts::default();
    let mut seen = false;
    for l in text.lines() {
        let (k, v) = l.split_once(' ').unwrap_or((l, ""));
        match k {
            "passwd" => {
                let p: Vec<&str> = v.split(':').collect();
                if p.len() < 7 {
                    return Err(format!("cannot read the passwd entry {v:?}"));
                }
                let num = |s: &str| {
                    s.parse::<u32>()
                        .map_err(|_| format!("cannot read the passwd entry {v:?}"))
                };
                f.uid = num(p[2])?;
                f.gid = num(p[3])?;
                f.home = p[5].to_string();
                f.shell = p[6].to_string();
                seen = true;
            }
            "primary" => f.primary = v.trim().to_string(),
            "groups" => f.groups = v.split_whitespace().map(str::to_string).collect(),
            _ => {}
        }
    }
    if !seen {
        return Err(format!("cannot read the account query's answer {text:?}"));
    }
    if f.primary.is_empty() {
        f.primary = f.gid.to_string();
    }
    Ok(Some(f))
}

/// The decision table of `user`: from the account (or `None`) and the options to the changes
/// and the one command (useradd, usermod or userdel) that makes them.
pub fn plan_user(name: &str, cur: Option<&UserFacts>, o: &UserOpts) -> Plan {
    let q = quote(name);
    let mut p = Plan::default();
    let absent = o.state == Some(Presence::Absent);
    let Some(f) = cur else {
        if absent {
            return p;
        }
        let mut cmd = String::from("useradd");
        if o.system {
            cmd.push_str(" --system");
        }
        if let Some(u) = o.uid {
            cmd.push_str(&format!(" --uid {u}"));
        }
        match &o.group {
            Some(g) => cmd.push_str(&format!(" --gid {}", quote(g))),
            None => cmd.push_str(" --user-group"),
        }
        if !o.groups.is_empty() {
            cmd.push_str(&format!(" --groups {}", quote(&o.groups.join(","))));
        }
        if let Some(hm) = &o.home {
            cmd.push_str(&format!(" --home-dir {}", quote(hm)));
        }
        cmd.push_str(if o.create_home {
            " --create-home"
        } else {
            " --no-create-home"
        });
        if let Some(s) = &o.shell {
            cmd.push_str(&format!(" --shell {}", quote(s)));
        }
        if let Some(c) = &o.comment {
            cmd.push_str(&format!(" --comment {}", quote(c)));
        }
        cmd.push_str(&format!(" {q}"));
        p.add(
            format!(
                "create user {name}{}",
                o.uid.map(|u| format!(" (uid {u})")).unwrap_or_default()
            ),
            cmd,
        );
        return p;
    };
    if absent {
        p.add(format!("delete user {name}"), format!("userdel {q}"));
        return p;
    }
    let mut mods = Vec::new();
    if let Some(u) = o.uid.filter(|u| *u != f.uid) {
        p.changes.push(format!("uid {} -> {u}", f.uid));
        mods.push(format!("--uid {u}"));
    }
    // A group given by number is compared with the number.
    let same_group = |g: &str| g == f.primary || g.parse::<u32>().ok() == Some(f.gid);
    if let Some(g) = o.group.as_ref().filter(|g| !same_group(g)) {
        p.changes
            .push(format!("primary group {} -> {g}", f.primary));
        mods.push(format!("--gid {}", quote(g)));
    }
    let mut missing: Vec<&str> = Vec::new();
    for g in &o.groups {
        if !f.groups.contains(g) && !missing.contains(&g.as_str()) {
            missing.push(g);
        }
    }
    if !missing.is_empty() {
        p.changes
            .push(format!("add to groups {}", missing.join(",")));
        mods.push(format!("--append --groups {}", quote(&missing.join(","))));
    }
    if let Some(hm) = o.home.as_ref().filter(|hm| **hm != f.home) {
        p.changes.push(format!("home {} -> {hm}", f.home));
        mods.push(format!("--home {}", quote(hm)));
    }
    if let Some(s) = o.shell.as_ref().filter(|s| **s != f.shell) {
        p.changes.push(format!("shell {} -> {s}", f.shell));
        mods.push(format!("--shell {}", quote(s)));
    }
    if !mods.is_empty() {
        p.cmds.push(format!("usermod {} {q}", mods.join(" ")));
    }
    p
}

/// A group as the name service database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFacts {
    pub gid: u32,
}

fn group_query(q: &str) -> String {
    format!(
        "l=$(getent group {q}) || {{ {} ; }}\nprintf '%s\\n' \"$l\"",
        getent_absent_or_fail("group")
    )
}

/// Reads the output of [`group_query`]: `None` when the group does not exist.
pub fn parse_group(text: &str) -> Result<Option<GroupFacts>, String> {
    let line = text.trim();
    if line == "absent" {
        return Ok(None);
    }
    line.split(':')
        .nth(2)
        .and_then(|s| s.trim().parse().ok())
        .map(|gid| Some(GroupFacts { gid }))
        .ok_or_else(|| format!("cannot read the group entry {line:?}"))
}

/// The decision table of `group`.
pub fn plan_group(name: &str, cur: Option<&GroupFacts>, o: &GroupOpts) -> Plan {
    let q = quote(name);
    let mut p = Plan::default();
    let absent = o.state == Some(Presence::Absent);
    match cur {
        None if absent => {}
        None => {
            let mut cmd = String::from("groupadd");
            if o.system {
                cmd.push_str(" --system");
            }
            if let Some(g) = o.gid {
                cmd.push_str(&format!(" --gid {g}"));
            }
            cmd.push_str(&format!(" {q}"));
            p.add(
                format!(
                    "create group {name}{}",
                    o.gid.map(|g| format!(" (gid {g})")).unwrap_or_default()
                ),
                cmd,
            );
        }
        Some(_) if absent => p.add(format!("delete group {name}"), format!("groupdel {q}")),
        Some(f) => {
            if let Some(g) = o.gid.filter(|g| *g != f.gid) {
                p.add(
                    format!("gid {} -> {g}", f.gid),
                    format!("groupmod --gid {g} {q}"),
                );
            }
        }
    }
    p
}

/// The step of `group`: its decision table, and the group's GID in the result.
pub fn group_step<'a>(name: &str, cur: Option<&GroupFacts>, o: &GroupOpts) -> StepPlan<'a> {
    let plan = StepPlan::from(plan_group(name, cur, o)).same_as(format!("{o:?}"));
    if o.state == Some(Presence::Absent) {
        return plan;
    }
    let gid = o.gid.or(cur.map(|c| c.gid)).map(|g| g as i64).unwrap_or(-1);
    plan.with("gid", gid)
}

fn do_group(
    ctx: &NativeCallContext,
    name: &str,
    o: GroupOpts,
) -> Result<Dynamic, Box<EvalAltResult>> {
    super::step(ctx, "group", name, |h| {
        valid_name(name)?;
        let out = check(h, &group_query(&quote(name)))?;
        if out.status != 0 {
            return Err(super::StepError::command(&out));
        }
        let cur = parse_group(&out.stdout_str())?;
        Ok(group_step(name, cur.as_ref(), &o))
    })
}

fn do_user(
    ctx: &NativeCallContext,
    name: &str,
    o: UserOpts,
) -> Result<Dynamic, Box<EvalAltResult>> {
    super::step(ctx, "user", name, |h| {
        valid_name(name)?;
        for g in o.groups.iter().chain(o.group.iter()) {
            valid_name(g)?;
        }
        let out = check(h, &user_query(&quote(name)))?;
        if out.status != 0 {
            return Err(super::StepError::command(&out));
        }
        let cur = parse_user(&out.stdout_str())?;
        Ok(StepPlan::from(plan_user(name, cur.as_ref(), &o)).same_as(format!("{o:?}")))
    })
}

#[export_module]
pub mod api {
    use super::*;

    /// Ensures a user account. Options: `uid`, `group` (primary; default a group of the
    /// user's name), `groups` (supplementary, added), `home`, `shell`, `system`,
    /// `create_home`, `comment`, `state` ("present" | "absent"; any other value is an error
    /// before the host is touched). A differing UID, primary group, home or shell is changed
    /// with usermod (files owned by the old UID are not re-owned); `system`, `create_home` and
    /// `comment` apply when the account is created.
    ///
    /// ```rhai
    /// group("slurm", #{gid: 64030, system: true});
    /// user("slurm", #{uid: 64030, group: "slurm", system: true, home: "/nonexistent", shell: "/usr/sbin/nologin"});
    /// ```
    #[rhai_fn(name = "user", return_raw)]
    pub fn user(
        ctx: NativeCallContext,
        name: &str,
        opts: rhai::Map,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let o: UserOpts = crate::primitives::opts(&ctx, opts)?;
        do_user(&ctx, name, o)
    }

    /// Ensures a group. Options: `gid`, `system`, `state` ("present" | "absent"; any other
    /// value is an error before the host is touched).
    #[rhai_fn(name = "group", return_raw)]
    pub fn group(
        ctx: NativeCallContext,
        name: &str,
        opts: rhai::Map,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let o: GroupOpts = crate::primitives::opts(&ctx, opts)?;
        do_group(&ctx, name, o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slurm() -> UserFacts {
        UserFacts {
            uid: 64030,
            gid: 64030,
            primary: "slurm".into(),
            groups: vec!["slurm".into(), "munge".into()],
            home: "/nonexistent".into(),
            shell: "/usr/sbin/nologin".into(),
        }
    }

    fn want() -> UserOpts {
        UserOpts {
            uid: Some(64030),
            group: Some("slurm".into()),
            groups: vec!["munge".into()],
            home: Some("/nonexistent".into()),
            shell: Some("/usr/sbin/nologin".into()),
            system: true,
            ..Default::default()
        }
    }

    #[test]
    fn reads_getent_answers() {
        assert_eq!(parse_user("absent\n"), Ok(None));
        let f = parse_user(
            "passwd slurm:x:64030:64030:Slurm:/nonexistent:/usr/sbin/nologin\nprimary slurm\ngroups slurm munge\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(f, slurm());
        // A primary group without a name is known by its number.
        let f = parse_user("passwd u:x:1001:4242::/home/u:/bin/sh\nprimary \ngroups 4242\n")
            .unwrap()
            .unwrap();
        assert_eq!((f.primary.as_str(), f.home.as_str()), ("4242", "/home/u"));
        assert!(parse_user("passwd broken\n").is_err());
        assert!(parse_user("").is_err());
        assert_eq!(parse_group("absent\n"), Ok(None));
        assert_eq!(
            parse_group("slurm:x:64030:\n"),
            Ok(Some(GroupFacts { gid: 64030 }))
        );
        assert!(parse_group("slurm:x:\n").is_err());
    }

    #[test]
    fn user_table() {
        // Absent -> useradd with every option; present and equal -> nothing.
        let p = plan_user("slurm", None, &want());
        assert_eq!(p.changes, ["create user slurm (uid 64030)"]);
        assert_eq!(
            p.cmds,
            ["useradd --system --uid 64030 --gid slurm --groups munge --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin slurm"]
        );
        assert!(plan_user("slurm", Some(&slurm()), &want()).is_empty());
        // Only the differences, in one usermod.
        let cur = UserFacts {
            uid: 1001,
            primary: "users".into(),
            gid: 100,
            groups: vec!["users".into()],
            shell: "/bin/bash".into(),
            ..slurm()
        };
        let p = plan_user("slurm", Some(&cur), &want());
        assert_eq!(
            p.changes,
            [
                "uid 1001 -> 64030",
                "primary group users -> slurm",
                "add to groups munge",
                "shell /bin/bash -> /usr/sbin/nologin"
            ]
        );
        assert_eq!(
            p.cmds,
            ["usermod --uid 64030 --gid slurm --append --groups munge --shell /usr/sbin/nologin slurm"]
        );
        // A primary group given by number matches the number.
        let o = UserOpts {
            group: Some("64030".into()),
            ..Default::default()
        };
        assert!(plan_user("slurm", Some(&slurm()), &o).is_empty());
        // Unset options are left as they are.
        assert!(plan_user("slurm", Some(&cur), &UserOpts::default()).is_empty());
        // Absent.
        let gone = UserOpts {
            state: Some(Presence::Absent),
            ..Default::default()
        };
        assert_eq!(
            plan_user("slurm", Some(&slurm()), &gone).cmds,
            ["userdel slurm"]
        );
        assert!(plan_user("slurm", None, &gone).is_empty());
    }

    #[test]
    fn group_table() {
        let o = GroupOpts {
            gid: Some(64030),
            system: true,
            state: None,
        };
        assert_eq!(
            plan_group("slurm", None, &o).cmds,
            ["groupadd --system --gid 64030 slurm"]
        );
        assert!(plan_group("slurm", Some(&GroupFacts { gid: 64030 }), &o).is_empty());
        let p = plan_group("slurm", Some(&GroupFacts { gid: 999 }), &o);
        assert_eq!(p.changes, ["gid 999 -> 64030"]);
        assert_eq!(p.cmds, ["groupmod --gid 64030 slurm"]);
        assert!(
            plan_group("slurm", Some(&GroupFacts { gid: 5 }), &GroupOpts::default()).is_empty()
        );
        let gone = GroupOpts {
            state: Some(Presence::Absent),
            ..Default::default()
        };
        assert_eq!(
            plan_group("slurm", Some(&GroupFacts { gid: 5 }), &gone).cmds,
            ["groupdel slurm"]
        );
        assert!(plan_group("slurm", None, &gone).is_empty());
    }

    #[test]
    fn group_step_returns_the_gid() {
        let o = GroupOpts {
            gid: Some(64030),
            system: true,
            state: None,
        };
        let p = group_step("slurm", None, &o);
        assert_eq!(p.changes, ["create group slurm (gid 64030)"]);
        assert_eq!(p.result["gid"].as_int().ok(), Some(64030));
        let p = group_step(
            "slurm",
            Some(&GroupFacts { gid: 77 }),
            &GroupOpts::default(),
        );
        assert!(p.changes.is_empty());
        assert_eq!(p.result["gid"].as_int().ok(), Some(77));
        let p = group_step("slurm", None, &GroupOpts::default());
        assert_eq!(p.result["gid"].as_int().ok(), Some(-1));
        let gone = GroupOpts {
            state: Some(Presence::Absent),
            ..Default::default()
        };
        assert!(!group_step("slurm", Some(&GroupFacts { gid: 5 }), &gone)
            .result
            .contains_key("gid"));
        // The same options are the same change; others are not.
        assert_eq!(
            group_step("slurm", None, &o).identity,
            group_step("slurm", None, &o).identity
        );
        assert_ne!(
            group_step("slurm", None, &o).identity,
            group_step("slurm", None, &gone).identity
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("slurm").is_ok());
        assert!(valid_name("host$").is_ok());
        for bad in ["", "-x", "a b", "a;b", "a/b"] {
            assert!(valid_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_typo_of_the_report_is_refused() {
        // `user("x", #{state: "abesnt"})` created the account.
        let o: Result<UserOpts, _> = rhai::serde::from_dynamic(&rhai::Dynamic::from_map(
            [("state".into(), rhai::Dynamic::from("abesnt".to_string()))]
                .into_iter()
                .collect(),
        ));
        let e = o.unwrap_err().to_string();
        assert!(e.contains("did you mean \"absent\"?"), "{e}");
    }

    #[test]
    fn the_queries_read_exit_codes_not_messages() {
        // Run the real query through /bin/sh on this machine: root exists, a random name not.
        let run = |cmd: String| {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(crate::primitives::in_c_locale(&cmd))
                .env("LANG", "ja_JP.UTF-8")
                .output()
                .expect("sh runs");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        let (rc, text) = run(user_query("root"));
        assert_eq!(rc, Some(0), "{text}");
        let f = parse_user(&text).unwrap().unwrap();
        assert_eq!((f.uid, f.primary.as_str()), (0, "root"));
        assert_eq!(f.groups, ["root"]);
        // The same facts as the query that cut its fields with `cut` (before 2026-12).
        let with_cut = |q: &str| {
            format!(
                "pw=$(getent passwd {q}) || {{ {} ; }}\n\
                 printf 'passwd %s\\n' \"$pw\"\n\
                 gid=$(printf '%s\\n' \"$pw\" | cut -d: -f4)\n\
                 printf 'primary %s\\n' \"$(getent group \"$gid\" | cut -d: -f1)\"\n\
                 printf 'groups %s\\n' \"$(id -Gn {q} 2>/dev/null)\"",
                getent_absent_or_fail("passwd")
            )
        };
        for name in ["root", "nobody", "daemon", "no-such-user-h4q"] {
            let (a, b) = (run(user_query(name)), run(with_cut(name)));
            assert_eq!(a.0, b.0, "{name}");
            assert_eq!(parse_user(&a.1), parse_user(&b.1), "{name}");
        }
        let (rc, text) = run(user_query("no-such-user-h4q"));
        assert_eq!((rc, text.as_str()), (Some(0), "absent\n"));
        let (rc, text) = run(group_query("root"));
        assert_eq!(
            (rc, parse_group(&text)),
            (Some(0), Ok(Some(GroupFacts { gid: 0 })))
        );
        let (rc, text) = run(group_query("no-such-group-h4q"));
        assert_eq!((rc, text.as_str()), (Some(0), "absent\n"));
    }
}
