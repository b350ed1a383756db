//! Users and groups: system or not, fixed UID/GID (the same on every node), home, shell.

use rhai::plugin::*;

use super::{apply, check, Outcome};
use crate::transport::quote;

/// Options of `user`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserOpts {
    pub uid: Option<u32>,
    pub group: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub home: Option<String>,
    pub shell: Option<String>,
    #[serde(default)]
    pub system: bool,
    #[serde(default)]
    pub create_home: bool,
    pub comment: Option<String>,
    pub state: Option<String>,
}

/// Options of `group`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupOpts {
    pub gid: Option<u32>,
    #[serde(default)]
    pub system: bool,
    pub state: Option<String>,
}

fn valid_name(n: &str) -> Result<(), String> {
    if n.is_empty()
        || n.starts_with('-')
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-$".contains(c))
    {
        return Err(format!("bad user or group name {n:?}"));
    }
    Ok(())
}

fn do_group(
    ctx: &NativeCallContext,
    name: &str,
    o: GroupOpts,
) -> Result<Dynamic, Box<EvalAltResult>> {
    super::step(ctx, "group", name, |h| {
        valid_name(name)?;
        let q = quote(name);
        let out = check(h, &format!("getent group {q} || true"))?;
        let line = out.stdout_str();
        let mut res = Outcome::ok();
        let absent = o.state.as_deref() == Some("absent");
        if line.trim().is_empty() {
            if absent {
                return Ok(res);
            }
            let mut cmd = String::from("groupadd");
            if o.system {
                cmd.push_str(" --system");
            }
            if let Some(g) = o.gid {
                cmd.push_str(&format!(" --gid {g}"));
            }
            cmd.push_str(&format!(" {q}"));
            res.change(format!(
                "create group {name}{}",
                o.gid.map(|g| format!(" (gid {g})")).unwrap_or_default()
            ));
            apply(h, &cmd, None)?;
            return Ok(res.with("gid", o.gid.map(|g| g as i64).unwrap_or(-1)));
        }
        if absent {
            res.change(format!("delete group {name}"));
            apply(h, &format!("groupdel {q}"), None)?;
            return Ok(res);
        }
        let gid: i64 = line
            .split(':')
            .nth(2)
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(-1);
        if let Some(g) = o.gid.filter(|g| *g as i64 != gid) {
            res.change(format!("gid {gid} -> {g}"));
            apply(h, &format!("groupmod --gid {g} {q}"), None)?;
        }
        Ok(res.with("gid", o.gid.map(|g| g as i64).unwrap_or(gid)))
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
        let q = quote(name);
        let out = check(
            h,
            &format!("getent passwd {q} && id -gn {q} && id -Gn {q}; true"),
        )?;
        let text = out.stdout_str();
        let mut lines = text.lines();
        let pw = lines.next().unwrap_or("").trim().to_string();
        let mut res = Outcome::ok();
        let absent = o.state.as_deref() == Some("absent");
        if pw.is_empty() {
            if absent {
                return Ok(res);
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
            res.change(format!(
                "create user {name}{}",
                o.uid.map(|u| format!(" (uid {u})")).unwrap_or_default()
            ));
            apply(h, &cmd, None)?;
            return Ok(res);
        }
        if absent {
            res.change(format!("delete user {name}"));
            apply(h, &format!("userdel {q}"), None)?;
            return Ok(res);
        }
        let f: Vec<&str> = pw.split(':').collect();
        let primary = lines.next().unwrap_or("").trim().to_string();
        let all: Vec<String> = lines
            .next()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let mut mods = Vec::new();
        if let Some(u) = o
            .uid
            .filter(|u| f.get(2).and_then(|s| s.parse::<u32>().ok()) != Some(*u))
        {
            res.change(format!("uid {} -> {u}", f.get(2).unwrap_or(&"?")));
            mods.push(format!("--uid {u}"));
        }
        if let Some(g) = o.group.as_ref().filter(|g| **g != primary) {
            res.change(format!("primary group {primary} -> {g}"));
            mods.push(format!("--gid {}", quote(g)));
        }
        let missing: Vec<&String> = o.groups.iter().filter(|g| !all.contains(g)).collect();
        if !missing.is_empty() {
            res.change(format!(
                "add to groups {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
            mods.push(format!(
                "--append --groups {}",
                quote(
                    &missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            ));
        }
        if let Some(hm) = o.home.as_ref().filter(|hm| f.get(5) != Some(&hm.as_str())) {
            res.change(format!("home {} -> {hm}", f.get(5).unwrap_or(&"?")));
            mods.push(format!("--home {}", quote(hm)));
        }
        if let Some(s) = o.shell.as_ref().filter(|s| f.get(6) != Some(&s.as_str())) {
            res.change(format!("shell {} -> {s}", f.get(6).unwrap_or(&"?")));
            mods.push(format!("--shell {}", quote(s)));
        }
        if !mods.is_empty() {
            apply(h, &format!("usermod {} {q}", mods.join(" ")), None)?;
        }
        Ok(res)
    })
}

#[export_module]
pub mod api {
    use super::*;

    /// Ensures a user account. Options: `uid`, `group` (primary; default a group of the
    /// user's name), `groups` (supplementary, added), `home`, `shell`, `system`,
    /// `create_home`, `comment`, `state` ("present" | "absent"). A differing UID is
    /// changed with usermod (files owned by the old UID are not re-owned).
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
        let o: UserOpts = crate::primitives::opts(&ctx, "user", opts)?;
        do_user(&ctx, name, o)
    }

    /// Ensures a group. Options: `gid`, `system`, `state` ("present" | "absent").
    #[rhai_fn(name = "group", return_raw)]
    pub fn group(
        ctx: NativeCallContext,
        name: &str,
        opts: rhai::Map,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let o: GroupOpts = crate::primitives::opts(&ctx, "group", opts)?;
        do_group(&ctx, name, o)
    }
}
