//! systemd services: started/stopped/restarted/reloaded, enabled/disabled, daemon-reload.

use rhai::plugin::*;

use super::{apply, check, Outcome};
use crate::transport::quote;

/// Options of `service`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceOpts {
    pub state: Option<String>,
    pub enabled: Option<bool>,
    #[serde(default)]
    pub daemon_reload: bool,
}

fn do_service(
    ctx: &NativeCallContext,
    name: &str,
    o: ServiceOpts,
) -> Result<Dynamic, Box<EvalAltResult>> {
    super::step(ctx, "service", name, |h| {
        super::no_nul("service", name)?;
        let q = quote(name);
        let st = check(h, &format!("systemctl is-active -- {q} 2>/dev/null; systemctl is-enabled -- {q} 2>/dev/null; true"))?;
        let text = st.stdout_str();
        let mut l = text.lines();
        let active = l.next().unwrap_or("unknown").trim().to_string();
        let enabled = l.next().unwrap_or("not-found").trim().to_string();
        let is_active = active == "active" || active == "activating" || active == "reloading";
        let is_enabled = matches!(
            enabled.as_str(),
            "enabled" | "enabled-runtime" | "static" | "alias" | "indirect" | "generated"
        );
        let mut out = Outcome::ok()
            .with("active", active.clone())
            .with("enabled", enabled.clone());
        let mut cmds: Vec<String> = Vec::new();
        if o.daemon_reload {
            cmds.push("systemctl daemon-reload".into());
        }
        let mut changed = false;
        match o.enabled {
            Some(true) if !is_enabled => {
                out.change(format!("enable {name} (was {enabled})"));
                cmds.push(format!("systemctl enable -q -- {q}"));
                changed = true;
            }
            Some(false) if enabled == "enabled" => {
                out.change(format!("disable {name}"));
                cmds.push(format!("systemctl disable -q -- {q}"));
                changed = true;
            }
            _ => {}
        }
        let verb = match o.state.as_deref() {
            None => None,
            Some("started") if !is_active => Some("start"),
            Some("started") => None,
            Some("stopped") if is_active => Some("stop"),
            Some("stopped") => None,
            Some("restarted") => Some(if is_active { "restart" } else { "start" }),
            Some("reloaded") => Some(if is_active {
                "reload-or-restart"
            } else {
                "start"
            }),
            Some(s) => {
                return Err(format!(
                    "state must be started, stopped, restarted or reloaded, not {s:?}"
                ))
            }
        };
        if let Some(v) = verb {
            out.change(format!("{v} {name} (was {active})"));
            cmds.push(format!("systemctl {v} -- {q}"));
            changed = true;
        }
        if !changed {
            if o.daemon_reload && !h.run.dry_run {
                apply(h, "systemctl daemon-reload", None)?;
            }
            return Ok(out);
        }
        let mut script = cmds.join(" && ");
        if matches!(
            o.state.as_deref(),
            Some("started" | "restarted" | "reloaded")
        ) {
            // A unit that dies right after start is a failure; show why.
            script = format!(
                "{script} || {{ rc=$?; systemctl status --no-pager -l -- {q} 2>&1 | tail -n 15 >&2; journalctl -u {q} -n 15 --no-pager 2>&1 >&2; exit $rc; }}"
            );
        }
        apply(h, &script, None)?;
        Ok(out)
    })
}

#[export_module]
pub mod api {
    use super::*;

    /// Ensures a systemd service's state and boot-time enablement. Options: `state`
    /// ("started" | "stopped" | "restarted" | "reloaded"; restarted/reloaded always act),
    /// `enabled` (bool), `daemon_reload` (run `systemctl daemon-reload` first).
    /// A unit that fails to start is a failure showing its status and journal tail.
    ///
    /// ```rhai
    /// let key = file("/etc/munge/munge.key", #{...});
    /// service("munge", #{state: if key.changed { "restarted" } else { "started" }, enabled: true});
    /// ```
    #[rhai_fn(name = "service", return_raw)]
    pub fn service(
        ctx: NativeCallContext,
        name: &str,
        opts: rhai::Map,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let o: ServiceOpts = crate::primitives::opts(&ctx, "service", opts)?;
        do_service(&ctx, name, o)
    }

    /// Runs `systemctl daemon-reload` (always reported `changed`; skipped in dry runs).
    #[rhai_fn(name = "daemon_reload", return_raw)]
    pub fn daemon_reload(ctx: NativeCallContext) -> Result<Dynamic, Box<EvalAltResult>> {
        crate::primitives::step(&ctx, "daemon_reload", "systemd", |h| {
            let mut out = Outcome::ok();
            out.change("systemctl daemon-reload");
            apply(h, "systemctl daemon-reload", None)?;
            Ok(out)
        })
    }
}
