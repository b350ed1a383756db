//! Facts: what a host is (OS, hostname, CPU layout, memory), gathered in one round trip.

use rhai::plugin::*;
use std::collections::BTreeMap;

use crate::context::HostCtx;

/// One shell command printing `key=value` lines; lscpu when present, /proc otherwise. It runs
/// in the C locale like every check (lscpu's labels are translated).
pub const FACTS_CMD: &str = r#"
. /etc/os-release 2>/dev/null
echo "os_id=${ID:-unknown}"
echo "os_version=${VERSION_ID:-}"
echo "os_name=${PRETTY_NAME:-unknown}"
echo "os_family=${ID_LIKE:-$ID}"
echo "hostname=$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)"
echo "fqdn=$(hostname -f 2>/dev/null || hostname 2>/dev/null)"
echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
echo "cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)"
if command -v lscpu >/dev/null 2>&1; then
  LC_ALL=C lscpu | sed -n -e 's/^Socket(s): *\(.*\)$/sockets=\1/p' -e 's/^Core(s) per socket: *\(.*\)$/cores_per_socket=\1/p' -e 's/^Thread(s) per core: *\(.*\)$/threads_per_core=\1/p'
else
  echo "sockets=$(grep '^physical id' /proc/cpuinfo | sort -u | wc -l)"
  echo "cores_per_socket=$(grep -m1 '^cpu cores' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')"
fi
echo "memory_mb=$(awk '/^MemTotal:/ {printf "%d", $2/1024}' /proc/meminfo)"
if command -v apt-get >/dev/null 2>&1; then echo pkg_manager=apt; elif command -v dnf >/dev/null 2>&1; then echo pkg_manager=dnf; elif command -v yum >/dev/null 2>&1; then echo pkg_manager=yum; else echo pkg_manager=none; fi
if [ -d /run/systemd/system ]; then echo init=systemd; else echo init=other; fi
echo "virt=$(systemd-detect-virt 2>/dev/null || echo unknown)"
echo "user=$(id -un)"
"#;

/// Turns `key=value` lines into a map; numbers become integers and a missing
/// socket/core/thread layout is derived so that sockets*cores*threads == cpus.
pub fn parse(text: &str) -> rhai::Map {
    let mut kv: BTreeMap<String, String> = BTreeMap::new();
    for l in text.lines() {
        if let Some((k, v)) = l.split_once('=') {
            kv.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    let num = |k: &str| {
        kv.get(k)
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|n| *n > 0)
    };
    let cpus = num("cpus").unwrap_or(1);
    let sockets = num("sockets").unwrap_or(1);
    let threads = num("threads_per_core").unwrap_or(1);
    let cores = num("cores_per_socket").unwrap_or((cpus / (sockets * threads)).max(1));
    let mut m = rhai::Map::new();
    for (k, v) in &kv {
        if !matches!(
            k.as_str(),
            "cpus" | "sockets" | "threads_per_core" | "cores_per_socket" | "memory_mb"
        ) {
            m.insert(k.as_str().into(), v.clone().into());
        }
    }
    m.insert("cpus".into(), cpus.into());
    m.insert("sockets".into(), sockets.into());
    m.insert("cores_per_socket".into(), cores.into());
    m.insert("threads_per_core".into(), threads.into());
    m.insert("memory_mb".into(), num("memory_mb").unwrap_or(0).into());
    m
}

/// Facts of `host` (cached for the run).
pub fn of(h: &HostCtx, host: &str) -> Result<rhai::Map, String> {
    if let Some(f) = h.run.hosts.cached_facts(host) {
        return Ok(f);
    }
    let out = h
        .exec_on(
            host,
            &crate::primitives::in_c_locale(FACTS_CMD),
            Some(std::time::Duration::from_secs(60)),
        )
        .map_err(|e| format!("facts of {host}: {e}"))?;
    let mut f = parse(&out.stdout_str());
    f.insert("name".into(), host.to_string().into());
    h.run.hosts.store_facts(host, f.clone());
    Ok(f)
}

#[export_module]
pub mod api {
    /// This host's facts: `os_id`, `os_version`, `os_name`, `os_family`, `hostname`,
    /// `fqdn`, `arch`, `kernel`, `cpus`, `sockets`, `cores_per_socket`,
    /// `threads_per_core`, `memory_mb`, `pkg_manager`, `init`, `virt`, `user`, `name`
    /// (inventory name). Gathered once per run in one round trip.
    ///
    /// ```rhai
    /// let f = facts();
    /// log(`${f.hostname}: ${f.cpus} CPUs, ${f.memory_mb} MiB`);
    /// ```
    #[rhai_fn(name = "facts", return_raw)]
    pub fn facts(ctx: NativeCallContext) -> Result<rhai::Map, Box<EvalAltResult>> {
        let h = crate::primitives::host_ctx(&ctx)?;
        let name = h.name.clone();
        super::of(&h, &name).map_err(|e| crate::primitives::err_at(e, ctx.call_position()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_lscpu_layout() {
        let m = super::parse("cpus=8\nsockets=2\ncores_per_socket=2\nthreads_per_core=2\nmemory_mb=1024\nhostname=w1\n");
        assert_eq!(m["cpus"].as_int().ok(), Some(8));
        assert_eq!(m["cores_per_socket"].as_int().ok(), Some(2));
        assert_eq!(
            m["hostname"].clone().into_string().ok().as_deref(),
            Some("w1")
        );
    }

    #[test]
    fn derives_missing_cores() {
        let m = super::parse("cpus=4\n");
        assert_eq!(m["sockets"].as_int().ok(), Some(1));
        assert_eq!(m["cores_per_socket"].as_int().ok(), Some(4));
    }
}
