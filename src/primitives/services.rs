//! systemd services: started/stopped/restarted/reloaded, enabled/disabled, daemon-reload.

use rhai::plugin::*;

use super::{check, Plan, StepPlan};
use crate::transport::quote;

choice!(
    /// `state` of `service`.
    ServiceState, "state",
    ["started" => Started, "stopped" => Stopped, "restarted" => Restarted, "reloaded" => Reloaded]
);

crate::primitives::options::options! {
    /// Options of `service`.
    pub struct ServiceOpts for "service" {
        state: Option<ServiceState>,
        enabled: Option<bool>,
        daemon_reload: bool,
    }
}

/// What systemd says about a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFacts {
    /// `ActiveState`: active, inactive, failed, activating, deactivating, reloading, ...
    pub active: String,
    /// `systemctl is-enabled` (enabled, disabled, static, masked, ...; it also knows SysV
    /// scripts), else `UnitFileState`; "not-found" when the unit does not exist.
    pub enabled: String,
}

/// One round trip, no words a locale translates: `systemctl show` prints `Key=value`
/// properties, and `is-enabled` prints fixed state names (systemd never translates them).
fn unit_query(q: &str) -> String {
    format!(
        "systemctl show -p LoadState -p ActiveState -p UnitFileState -- {q} || exit $?\n\
         printf 'IsEnabled='; systemctl is-enabled -- {q} 2>/dev/null; echo"
    )
}

/// Reads the `Key=value` lines of [`unit_query`].
pub fn parse_unit(text: &str) -> UnitFacts {
    let mut load = "";
    let mut active = "";
    let mut file_state = "";
    let mut is_enabled = "";
    for l in text.lines() {
        match l.split_once('=') {
            Some(("LoadState", v)) => load = v.trim(),
            Some(("ActiveState", v)) => active = v.trim(),
            Some(("UnitFileState", v)) => file_state = v.trim(),
            Some(("IsEnabled", v)) => is_enabled = v.trim(),
            _ => {}
        }
    }
    let enabled = if !is_enabled.is_empty() {
        is_enabled
    } else if !file_state.is_empty() {
        file_state
    } else if load == "not-found" {
        "not-found"
    } else {
        "unknown"
    };
    UnitFacts {
        active: if active.is_empty() { "unknown" } else { active }.to_string(),
        enabled: enabled.to_string(),
    }
}

/// The decision table of `service`: from the unit's state and the options to the changes and
/// the `systemctl` commands that make them (enablement first, then the state).
pub fn plan_service(name: &str, u: &UnitFacts, o: &ServiceOpts) -> Plan {
    let q = quote(name);
    let is_active = matches!(u.active.as_str(), "active" | "activating" | "reloading");
    let is_enabled = matches!(
        u.enabled.as_str(),
        "enabled" | "enabled-runtime" | "static" | "alias" | "indirect" | "generated"
    );
    let mut p = Plan::default();
    match o.enabled {
        Some(true) if !is_enabled => p.add(
            format!("enable {name} (was {})", u.enabled),
            format!("systemctl enable -q -- {q}"),
        ),
        Some(false) if u.enabled == "enabled" => p.add(
            format!("disable {name}"),
            format!("systemctl disable -q -- {q}"),
        ),
        _ => {}
    }
    let verb = match o.state {
        None => None,
        Some(ServiceState::Started) => (!is_active).then_some("start"),
        Some(ServiceState::Stopped) => is_active.then_some("stop"),
        Some(ServiceState::Restarted) => Some(if is_active { "restart" } else { "start" }),
        Some(ServiceState::Reloaded) => Some(if is_active {
            "reload-or-restart"
        } else {
            "start"
        }),
    };
    if let Some(v) = verb {
        p.add(
            format!("{v} {name} (was {})", u.active),
            format!("systemctl {v} -- {q}"),
        );
    }
    p
}

/// The step of `service`: the decision table's commands as one script, which shows the
/// unit's status and journal when a start fails, and the unit's states in the result.
pub fn service_plan<'a>(name: &str, u: &UnitFacts, o: &ServiceOpts) -> StepPlan<'a> {
    let q = quote(name);
    let plan = plan_service(name, u, o);
    let acts = matches!(
        o.state,
        Some(ServiceState::Restarted | ServiceState::Reloaded)
    );
    let mut step = if plan.is_empty() {
        StepPlan::ok()
    } else {
        let mut script = plan.cmds.join(" && ");
        if matches!(
            o.state,
            Some(ServiceState::Started | ServiceState::Restarted | ServiceState::Reloaded)
        ) {
            // A unit that dies right after start is a failure; show why.
            script = format!(
                "{script} || {{ rc=$?; systemctl status --no-pager -l -- {q} 2>&1 | tail -n 15 >&2; journalctl -u {q} -n 15 --no-pager 2>&1 >&2; exit $rc; }}"
            );
        }
        StepPlan::script(plan.changes, script, None, None)
    };
    if !acts {
        // Restarts and reloads act every time; starting, stopping and enabling do not.
        step = step.same_as(format!("{:?} {:?}", o.state, o.enabled));
    }
    step.with("active", u.active.clone())
        .with("enabled", u.enabled.clone())
}

fn do_service(
    ctx: &NativeCallContext,
    name: &str,
    o: ServiceOpts,
) -> Result<Dynamic, Box<EvalAltResult>> {
    // Before the query: a unit file written by an earlier step must be seen as it is.
    let before = o.daemon_reload.then_some("systemctl daemon-reload");
    super::step_after(ctx, "service", name, before, |h| {
        super::no_nul("service", name)?;
        let q = quote(name);
        let st = check(h, &unit_query(&q))?;
        if st.status != 0 {
            return Err(super::StepError::command(&st).doing(format!(
                "cannot read the state of {name} with systemctl (is this host running systemd?)"
            )));
        }
        Ok(service_plan(name, &parse_unit(&st.stdout_str()), &o))
    })
}

#[export_module]
pub mod api {
    use super::*;

    /// Ensures a systemd service's state and boot-time enablement. Options: `state`
    /// ("started" | "stopped" | "restarted" | "reloaded"; restarted/reloaded always act; any
    /// other value is an error before the host is touched), `enabled` (bool), `daemon_reload`
    /// (run `systemctl daemon-reload` before looking at the unit). Returns `#{changed, active,
    /// enabled}` with systemd's own state names (`ActiveState`, `systemctl is-enabled`).
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
        let o: ServiceOpts = crate::primitives::opts(&ctx, opts)?;
        do_service(&ctx, name, o)
    }

    /// Runs `systemctl daemon-reload` (always reported `changed`; skipped in dry runs).
    #[rhai_fn(name = "daemon_reload", return_raw)]
    pub fn daemon_reload(ctx: NativeCallContext) -> Result<Dynamic, Box<EvalAltResult>> {
        crate::primitives::step(&ctx, "daemon_reload", "systemd", |_| {
            Ok(StepPlan::script(
                vec!["systemctl daemon-reload".into()],
                "systemctl daemon-reload".into(),
                None,
                None,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(active: &str, enabled: &str) -> UnitFacts {
        UnitFacts {
            active: active.into(),
            enabled: enabled.into(),
        }
    }

    fn opts(state: Option<ServiceState>, enabled: Option<bool>) -> ServiceOpts {
        ServiceOpts {
            state,
            enabled,
            daemon_reload: false,
        }
    }

    #[test]
    fn reads_systemctl_properties() {
        let u = parse_unit(
            "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\nIsEnabled=enabled\n",
        );
        assert_eq!(u, unit("active", "enabled"));
        // A SysV script: is-enabled knows better than UnitFileState ("generated").
        let u = parse_unit(
            "LoadState=loaded\nActiveState=inactive\nUnitFileState=generated\nIsEnabled=disabled\n",
        );
        assert_eq!(u, unit("inactive", "disabled"));
        let u =
            parse_unit("LoadState=not-found\nActiveState=inactive\nUnitFileState=\nIsEnabled=\n");
        assert_eq!(u, unit("inactive", "not-found"));
        // Whatever order systemctl prints them in.
        let u =
            parse_unit("IsEnabled=\nUnitFileState=masked\nActiveState=failed\nLoadState=masked\n");
        assert_eq!(u, unit("failed", "masked"));
        assert_eq!(parse_unit(""), unit("unknown", "unknown"));
    }

    #[test]
    fn state_table() {
        use ServiceState::*;
        // (active state, wanted state) -> systemctl verb, or none.
        let cases = [
            ("inactive", Started, Some("start")),
            ("failed", Started, Some("start")),
            ("active", Started, None),
            ("activating", Started, None),
            ("reloading", Started, None),
            ("active", Stopped, Some("stop")),
            ("activating", Stopped, Some("stop")),
            ("inactive", Stopped, None),
            ("failed", Stopped, None),
            ("active", Restarted, Some("restart")),
            ("inactive", Restarted, Some("start")),
            ("active", Reloaded, Some("reload-or-restart")),
            ("inactive", Reloaded, Some("start")),
        ];
        for (active, want, verb) in cases {
            let p = plan_service("munge", &unit(active, "enabled"), &opts(Some(want), None));
            let expect: Vec<String> = verb
                .map(|v| format!("systemctl {v} -- munge"))
                .into_iter()
                .collect();
            assert_eq!(p.cmds, expect, "{active} + {}", want.as_str());
            if let Some(v) = verb {
                assert_eq!(p.changes, [format!("{v} munge (was {active})")]);
            }
        }
        assert!(plan_service("munge", &unit("active", "enabled"), &opts(None, None)).is_empty());
    }

    #[test]
    fn enablement_table() {
        // (is-enabled, wanted) -> command, or none.
        let cases = [
            ("disabled", true, Some("enable")),
            ("not-found", true, Some("enable")),
            ("masked", true, Some("enable")),
            ("enabled", true, None),
            ("static", true, None),
            ("indirect", true, None),
            ("generated", true, None),
            ("alias", true, None),
            ("enabled-runtime", true, None),
            ("enabled", false, Some("disable")),
            ("disabled", false, None),
            ("static", false, None),
            ("not-found", false, None),
        ];
        for (enabled, want, verb) in cases {
            let p = plan_service("munge", &unit("active", enabled), &opts(None, Some(want)));
            let expect: Vec<String> = verb
                .map(|v| format!("systemctl {v} -q -- munge"))
                .into_iter()
                .collect();
            assert_eq!(p.cmds, expect, "{enabled} + {want}");
        }
        // Both at once: enable, then start.
        let p = plan_service(
            "munge",
            &unit("inactive", "disabled"),
            &opts(Some(ServiceState::Started), Some(true)),
        );
        assert_eq!(
            p.cmds,
            ["systemctl enable -q -- munge", "systemctl start -- munge"]
        );
        assert_eq!(
            p.changes,
            ["enable munge (was disabled)", "start munge (was inactive)"]
        );
    }

    #[test]
    fn a_misspelt_state_is_refused_with_the_allowed_ones() {
        let e = ServiceState::parse("started ").unwrap_err();
        assert!(
            e.contains("\"started\", \"stopped\", \"restarted\", \"reloaded\""),
            "{e}"
        );
        let e = ServiceState::parse("restart").unwrap_err();
        assert!(e.contains("did you mean \"restarted\"?"), "{e}");
    }

    #[test]
    fn the_step_shows_why_a_start_failed_and_counts_restarts_each_time() {
        let u = unit("inactive", "disabled");
        let p = service_plan("munge", &u, &opts(Some(ServiceState::Started), Some(true)));
        let crate::primitives::Action::Script { cmd, .. } = &p.action else {
            panic!("a script: {p:?}");
        };
        assert!(
            cmd.starts_with("systemctl enable -q -- munge && systemctl start -- munge || { rc=$?; systemctl status"),
            "{cmd}"
        );
        assert!(p.identity.is_some());
        assert_eq!(p.result["active"].to_string(), "inactive");
        // Stopping shows no status; nothing to do runs nothing.
        let p = service_plan(
            "munge",
            &unit("active", "enabled"),
            &opts(Some(ServiceState::Stopped), None),
        );
        let crate::primitives::Action::Script { cmd, .. } = &p.action else {
            panic!("a script: {p:?}");
        };
        assert_eq!(cmd, "systemctl stop -- munge");
        let p = service_plan(
            "munge",
            &unit("active", "enabled"),
            &opts(Some(ServiceState::Started), Some(true)),
        );
        assert!(p.changes.is_empty() && matches!(p.action, crate::primitives::Action::Nothing));
        // A restart is a change of its own every time it is planned.
        let p = service_plan(
            "munge",
            &unit("active", "enabled"),
            &opts(Some(ServiceState::Restarted), None),
        );
        assert_eq!(p.changes, ["restart munge (was active)"]);
        assert_eq!(p.identity, None);
        let p = service_plan(
            "munge",
            &unit("active", "enabled"),
            &opts(Some(ServiceState::Reloaded), None),
        );
        assert_eq!(p.identity, None);
    }
}
