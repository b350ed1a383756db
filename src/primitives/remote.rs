//! Other hosts seen from a recipe: `host("master")` and inventory groups, through the controller.

use rhai::plugin::*;

/// A handle on another inventory host; its connection is opened on first use and reused.
#[derive(Debug, Clone)]
pub struct HostRef {
    pub name: String,
}

#[export_module]
pub mod api {
    use super::HostRef;
    use crate::primitives::files::{read_value, stat_value, ReadOpts};

    /// A handle on another inventory host (read-only access through the controller):
    /// `.name`, `.facts()`, `.read_file(path [, #{secret, binary}])`, `.stat(path)`,
    /// `.exists(path)`, `.probe(cmd)`.
    ///
    /// ```rhai
    /// let m = host(vars.master);
    /// let conf = m.read_file("/etc/slurm/slurm.conf");
    /// ```
    #[rhai_fn(name = "host")]
    pub fn host(name: &str) -> HostRef {
        HostRef {
            name: name.to_string(),
        }
    }

    /// The inventory name of this handle's host.
    #[rhai_fn(get = "name", pure)]
    pub fn get_name(h: &mut HostRef) -> String {
        h.name.clone()
    }

    /// Facts of that host (see `facts()`).
    #[rhai_fn(name = "facts", return_raw)]
    pub fn facts_of(ctx: NativeCallContext, h: HostRef) -> Result<rhai::Map, Box<EvalAltResult>> {
        let me = crate::primitives::host_ctx(&ctx)?;
        crate::primitives::facts::of(&me, &h.name)
            .map_err(|e| crate::primitives::err_at(e, ctx.call_position()))
    }

    /// Reads a text file of that host.
    #[rhai_fn(name = "read_file", return_raw)]
    pub fn read_file_of(
        ctx: NativeCallContext,
        h: HostRef,
        path: &str,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        read_value(&ctx, Some(&h.name), path, ReadOpts::default())
    }

    /// Reads a file of that host, as a secret or a blob (`#{secret: true}` / `#{binary: true}`).
    #[rhai_fn(name = "read_file", return_raw)]
    pub fn read_file_of_opts(
        ctx: NativeCallContext,
        h: HostRef,
        path: &str,
        opts: rhai::Map,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let o: ReadOpts = crate::primitives::opts(&ctx, opts)?;
        read_value(&ctx, Some(&h.name), path, o)
    }

    /// stat of a path on that host, or `()`.
    #[rhai_fn(name = "stat", return_raw)]
    pub fn stat_of(
        ctx: NativeCallContext,
        h: HostRef,
        path: &str,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        stat_value(&ctx, Some(&h.name), path)
    }

    /// Whether a path exists on that host.
    #[rhai_fn(name = "exists", return_raw)]
    pub fn exists_of(
        ctx: NativeCallContext,
        h: HostRef,
        path: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        Ok(!stat_value(&ctx, Some(&h.name), path)?.is_unit())
    }

    /// `require` on that host: true when the path exists there (or is planned); else a real
    /// run stops with the message and a dry run notes it and returns false.
    #[rhai_fn(name = "require", return_raw)]
    pub fn require_of(
        ctx: NativeCallContext,
        h: HostRef,
        path: &str,
        message: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        crate::primitives::files::require_value(&ctx, Some(&h.name), path, message)
    }

    /// Runs a read-only command on that host with `LC_ALL=C`: `#{ok, rc, stdout, stderr}`.
    #[rhai_fn(name = "probe", return_raw)]
    pub fn probe_of(
        ctx: NativeCallContext,
        h: HostRef,
        cmd: &str,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let me = crate::primitives::host_ctx(&ctx)?;
        let out = me
            .exec_on(&h.name, &crate::primitives::in_c_locale(cmd), None)
            .map_err(|e| {
                crate::primitives::err_at(format!("{}: {e}", h.name), ctx.call_position())
            })?;
        Ok(crate::primitives::command::probe_result(&out))
    }

    /// Names of the inventory hosts in a group ("all" = every host); `[]` if unknown.
    #[rhai_fn(name = "group_hosts", return_raw)]
    pub fn group_hosts(
        ctx: NativeCallContext,
        group: &str,
    ) -> Result<rhai::Array, Box<EvalAltResult>> {
        let me = crate::primitives::host_info(&ctx)?;
        Ok(crate::primitives::group_array(
            &me.run.hosts.inventory,
            group,
        ))
    }

    /// The inventory name of the host this recipe runs for.
    #[rhai_fn(name = "host_name", return_raw)]
    pub fn host_name(ctx: NativeCallContext) -> Result<String, Box<EvalAltResult>> {
        Ok(crate::primitives::host_info(&ctx)?.name.clone())
    }

    /// Whether this is a dry run (nothing is changed on any host).
    #[rhai_fn(name = "is_dry_run", return_raw)]
    pub fn is_dry_run(ctx: NativeCallContext) -> Result<bool, Box<EvalAltResult>> {
        Ok(crate::primitives::host_info(&ctx)?.run.dry_run)
    }

    /// Prints a note in the run's output (secrets redacted).
    #[rhai_fn(name = "log", return_raw)]
    pub fn log(ctx: NativeCallContext, msg: &str) -> Result<(), Box<EvalAltResult>> {
        let me = crate::primitives::host_ctx(&ctx)?;
        me.run.reporter.note(&me.name, msg);
        Ok(())
    }

    /// A note that holds a secret shows the secret's size and checksum.
    #[rhai_fn(name = "log", return_raw)]
    pub fn log_secret(
        ctx: NativeCallContext,
        msg: crate::secrets::Secret,
    ) -> Result<(), Box<EvalAltResult>> {
        log(ctx, &msg.describe())
    }

    /// Stops the recipe on this host with an error message.
    #[rhai_fn(name = "fail", return_raw)]
    pub fn fail(ctx: NativeCallContext, msg: &str) -> Result<(), Box<EvalAltResult>> {
        Err(crate::primitives::err_at(
            msg.to_string(),
            ctx.call_position(),
        ))
    }

    /// Marks a string as a secret: it can be written to files but never appears in output.
    #[rhai_fn(name = "secret", return_raw)]
    pub fn secret(
        ctx: NativeCallContext,
        value: &str,
    ) -> Result<crate::secrets::Secret, Box<EvalAltResult>> {
        if let Ok(me) = crate::primitives::host_info(&ctx) {
            me.run.reporter.redactor().add(value.as_bytes());
        }
        Ok(crate::secrets::Secret(std::sync::Arc::new(
            value.as_bytes().to_vec(),
        )))
    }

    /// A secret prints as its size and checksum only.
    #[rhai_fn(name = "to_string", pure)]
    pub fn secret_to_string(s: &mut crate::secrets::Secret) -> String {
        s.describe()
    }

    /// A secret prints as its size and checksum only.
    #[rhai_fn(name = "to_debug", pure)]
    pub fn secret_to_debug(s: &mut crate::secrets::Secret) -> String {
        s.describe()
    }

    /// sha256 (hex) of a secret, for comparisons.
    #[rhai_fn(get = "sha256", pure)]
    pub fn secret_sha(s: &mut crate::secrets::Secret) -> String {
        crate::secrets::sha256_hex(&s.0)
    }

    /// Pauses this host's recipe for some seconds.
    #[rhai_fn(name = "sleep")]
    pub fn sleep(ctx: NativeCallContext, secs: i64) {
        // The collecting pass of the probes asked ahead changes nothing by waiting.
        if crate::primitives::host_info(&ctx).is_ok_and(|h| h.prefetch.collecting()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_secs(secs.clamp(0, 3600) as u64));
    }
}
