//! `recipe sandbox`: throw-away Debian 12 or 13 hosts on this machine (systemd-nspawn, one network namespace each) to run recipes against.
//!
//! `up` boots each host from a cached debootstrap image through an overlay (so the host is
//! ephemeral: its writes land in a per-host layer that `down` deletes), each with its own
//! address on a private bridge, its own hostname, /etc/hosts naming every host, sshd with a
//! host key the sandbox generated, root key login, and apt through a tinyproxy on the bridge.
//! It writes an inventory and a known_hosts file. Nothing but the sandbox's own addresses
//! (10.231.N.0/24) and loopback is ever sent traffic by the sandbox code.

mod fileserver;
mod host;
mod image;
mod inventory_file;
mod keys;
mod names;
mod net;
mod paths;
mod preflight;
mod probe;
mod process;
mod proxy;
mod state;
mod status;
mod supervisor;
mod teardown;
mod tools;

pub use fileserver::serve_files;
pub use host::ssh_command;
pub use image::Release;
pub use supervisor::supervise;

use anyhow::{bail, Context, Result};
use paths::Layout;
use state::{HostState, SandboxState};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Name of the sandbox when none is given.
pub const DEFAULT_NAME: &str = "default";
/// Hosts of the sandbox when none are given.
pub const DEFAULT_HOSTS: [&str; 3] = ["master", "w1", "w2"];
/// Seconds a host may take to boot (default 60).
pub const BOOT_TIMEOUT_ENV: &str = "RECIPE_SANDBOX_BOOT_TIMEOUT";

/// What `recipe sandbox up` makes.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub name: String,
    pub hosts: Vec<String>,
    /// Folder served to the hosts over HTTP; default: the sandbox's own `files/`.
    pub serve: Option<PathBuf>,
    /// Extra packages baked into the base image (may be empty).
    pub packages: Vec<String>,
    /// Debian release of every host.
    pub release: Release,
    /// The minimal image (no curl, wget, sudo, procps: see [`image::MINIMAL_PACKAGES`]).
    pub minimal: bool,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            name: DEFAULT_NAME.to_string(),
            hosts: DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect(),
            serve: None,
            packages: Vec::new(),
            release: Release::default(),
            minimal: false,
        }
    }
}

/// What `up` made, and where its files are.
#[derive(Debug, Clone)]
pub struct SandboxInfo {
    pub name: String,
    pub dir: PathBuf,
    pub inventory: PathBuf,
    pub known_hosts: PathBuf,
    pub key: PathBuf,
    pub hosts: Vec<(String, Ipv4Addr)>,
    pub bridge_addr: Ipv4Addr,
    pub proxy_port: u16,
    pub files_url: String,
    pub release: Release,
}

fn boot_timeout() -> Duration {
    let secs = std::env::var(BOOT_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// Boots the sandbox `opts.name` (tearing down leftovers of the same name first). Progress
/// goes to stderr, the usage hint to stdout. On failure nothing of it is left behind.
pub fn up(opts: &UpOptions) -> Result<SandboxInfo> {
    names::check_sandbox_name(&opts.name)?;
    names::check_host_list(&opts.hosts)?;
    let cached = image::lookup(opts.release, &opts.packages, opts.minimal)?.is_complete();
    let serve_dir = match &opts.serve {
        Some(d) => {
            let c = d
                .canonicalize()
                .with_context(|| format!("cannot serve {}: no such folder", d.display()))?;
            if !c.is_dir() {
                bail!("cannot serve {}: not a folder", d.display());
            }
            Some(c)
        }
        None => None,
    };
    preflight::check_up(cached)?;
    let name = opts.name.as_str();

    if teardown::exists(name) {
        eprintln!("sandbox {name}: removing what an earlier run left behind");
        teardown::teardown(name)
            .with_context(|| format!("cannot remove the leftovers of sandbox {name}"))?;
    }

    let octet = names::subnet_octet(name);
    let subnet = names::subnet(octet);
    if let Some(other) = state::owner_of_octet(octet, name) {
        bail!(
            "sandbox {name} would use the address range {subnet}/24, which sandbox {other} already uses: \
             choose another --name (the range is derived from it) or take {other} down first"
        );
    }
    let conflicts = net::conflicts(octet)?;
    if !conflicts.is_empty() {
        bail!(
            "address range {subnet}/24 (derived from the sandbox name {name:?}) is already in use on this machine: {}. \
             Choose another --name, or remove what uses the range",
            conflicts.join("; ")
        );
    }

    let started = Instant::now();
    let image = image::ensure(opts.release, &opts.packages, opts.minimal)?;
    let t_boot = Instant::now();
    let result = build(opts, octet, &image, serve_dir);
    match result {
        Ok(info) => {
            eprintln!(
                "sandbox {name}: {} up in {:.1} s ({:.1} s in all)",
                plural(info.hosts.len(), "host"),
                t_boot.elapsed().as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            print!("{}", usage_text(&info));
            Ok(info)
        }
        Err(e) => {
            eprintln!("sandbox {name}: up failed, removing what was made");
            if let Err(e2) = teardown::teardown(name) {
                eprintln!("sandbox {name}: cleaning up failed too: {e2:#}");
            }
            Err(e)
        }
    }
}

fn build(
    opts: &UpOptions,
    octet: u8,
    image: &image::Image,
    serve_dir: Option<PathBuf>,
) -> Result<SandboxInfo> {
    let name = opts.name.as_str();
    let layout = Layout::new(name);
    std::fs::create_dir_all(layout.hosts_dir())
        .with_context(|| format!("cannot create {}", layout.hosts_dir().display()))?;
    let serve_dir = match serve_dir {
        Some(d) => d,
        None => {
            std::fs::create_dir_all(layout.files())?;
            layout.files()
        }
    };
    let bridge_addr = names::bridge_addr(octet);
    let hosts: Vec<HostState> = opts
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| HostState {
            name: h.clone(),
            addr: names::host_addr(octet, i),
            netns: names::netns_name(octet, h),
            veth: names::veth_name(octet, i),
        })
        .collect();
    let mut st = SandboxState {
        name: name.to_string(),
        octet,
        bridge: names::bridge_name(octet),
        bridge_addr,
        hosts: hosts.clone(),
        image: image.key.clone(),
        release: image.release.suite().to_string(),
        serve_dir: serve_dir.clone(),
        proxy_port: 0,
        files_port: 0,
        phase: "starting".into(),
    };
    // Recorded first, so that `down` (or the next `up`) can clean up whatever follows.
    st.save(&layout)?;

    eprintln!("sandbox {name}: keys");
    keys::generate(&layout.key(), &format!("recipe-sandbox-{name}"))?;
    let client_pub = std::fs::read_to_string(layout.pub_key())?;
    let mut kh = Vec::new();
    for h in &hosts {
        let hl = layout.host(&h.name);
        std::fs::create_dir_all(&hl.dir)?;
        keys::generate(&hl.host_key(), &format!("root@{}", h.name))?;
        let body = keys::public_key_body(&std::fs::read_to_string(hl.host_pub_key())?)?;
        kh.push((h.name.clone(), h.addr, body));
    }
    std::fs::write(layout.known_hosts(), keys::known_hosts_text(&kh))?;

    eprintln!(
        "sandbox {name}: network {}/24 on bridge {}",
        names::subnet(octet),
        st.bridge
    );
    net::create_bridge(octet)?;
    for h in &hosts {
        net::create_host(
            octet,
            &net::HostNet {
                netns: h.netns.clone(),
                veth: h.veth.clone(),
                addr: h.addr,
            },
        )?;
    }

    let proxy_port = probe::free_port(bridge_addr, proxy::PREFERRED_PORT)?;
    st.proxy_port = proxy_port;
    st.save(&layout)?;
    proxy::start(&layout, bridge_addr, proxy_port, names::subnet(octet))?;
    let files_port = probe::free_port(bridge_addr, fileserver::PREFERRED_PORT)?;
    st.files_port = files_port;
    st.save(&layout)?;
    fileserver::start(
        &layout,
        &serve_dir,
        SocketAddrV4::new(bridge_addr, files_port),
    )?;
    let proxy_url = format!("http://{bridge_addr}:{proxy_port}");
    let files_url = format!("http://{bridge_addr}:{files_port}");

    let host_list: Vec<(String, Ipv4Addr)> =
        hosts.iter().map(|h| (h.name.clone(), h.addr)).collect();
    let etc_hosts = host::etc_hosts_text(&host_list, bridge_addr);
    let apt_conf = proxy::apt_conf_text(&proxy_url);
    let lower = image.rootfs();
    eprintln!("sandbox {name}: booting {}", opts.hosts.join(", "));
    let mut pids = Vec::new();
    for h in &hosts {
        let hl = layout.host(&h.name);
        host::prepare(
            &hl,
            &lower,
            &host::HostFiles {
                hostname: &h.name,
                etc_hosts: &etc_hosts,
                authorized_key: &client_pub,
                apt_proxy_conf: &apt_conf,
            },
        )?;
        host::mount_root(&hl, &lower)?;
        pids.push(host::boot(&hl, &h.netns, &layout.dir)?);
    }

    let limit = boot_timeout();
    let key = layout.key();
    let known_hosts = layout.known_hosts();
    let results: Vec<(String, Result<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .zip(&pids)
            .map(|(h, pid)| {
                let hl = layout.host(&h.name);
                let (key, known_hosts) = (&key, &known_hosts);
                s.spawn(move || {
                    let target = host::SshTarget {
                        addr: h.addr,
                        key,
                        known_hosts,
                    };
                    let r = host::wait_ready(&h.name, *pid, &hl, &target, limit);
                    if let Ok(state) = &r {
                        if state == "degraded" {
                            eprintln!(
                                "sandbox {}: host {} is degraded (failed units: {})",
                                opts.name,
                                h.name,
                                host::failed_units(&target)
                            );
                        }
                    }
                    (h.name.clone(), r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    ("?".to_string(), Err(anyhow::anyhow!("boot check panicked")))
                })
            })
            .collect()
    });
    let mut errors = Vec::new();
    for (_h, r) in results {
        if let Err(e) = r {
            errors.push(format!("{e:#}"));
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n\n"));
    }

    let inventory = inventory_file::render(&inventory_file::InventorySpec {
        sandbox: name,
        known_hosts: &known_hosts,
        key: &key,
        hosts: &host_list,
        files_url: &files_url,
        proxy_url: &proxy_url,
    });
    std::fs::write(layout.inventory(), inventory)
        .with_context(|| format!("cannot write {}", layout.inventory().display()))?;
    st.phase = "up".into();
    st.save(&layout)?;

    Ok(SandboxInfo {
        name: name.to_string(),
        dir: layout.dir.clone(),
        inventory: layout.inventory(),
        known_hosts,
        key,
        hosts: host_list,
        bridge_addr,
        proxy_port,
        files_url,
        release: image.release,
    })
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// How the operator runs this program: `recipe` when that is what PATH finds, else its path.
fn self_command() -> String {
    let Ok(me) = std::env::current_exe() else {
        return "recipe".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            d.join("recipe")
                .canonicalize()
                .is_ok_and(|c| me.canonicalize().is_ok_and(|m| m == c))
        })
    });
    if on_path {
        "recipe".into()
    } else {
        me.display().to_string()
    }
}

/// What `up` prints on stdout: where things are and how to use them.
pub fn usage_text(info: &SandboxInfo) -> String {
    let mut s = format!(
        "sandbox {} is up: {}, Debian {} ({})\n",
        info.name,
        plural(info.hosts.len(), "host"),
        info.release.version(),
        info.release.suite()
    );
    for (n, a) in &info.hosts {
        s.push_str(&format!("  {n:<12} {a}\n"));
    }
    s.push_str(&format!("inventory:   {}\n", info.inventory.display()));
    s.push_str(&format!("known_hosts: {}\n", info.known_hosts.display()));
    s.push_str(&format!("root key:    {}\n", info.key.display()));
    s.push_str(&format!(
        "apt proxy:   http://{}:{}  (inventory var sandbox_proxy)\n",
        info.bridge_addr, info.proxy_port
    ));
    s.push_str(&format!(
        "files:       {}  (inventory var sandbox_files_url)\n",
        info.files_url
    ));
    s.push_str(&format!(
        "run a recipe: {} run RECIPE -i {} --group all\n",
        self_command(),
        info.inventory.display()
    ));
    if let Some((n, a)) = info.hosts.first() {
        s.push_str(&format!(
            "log in:       ssh -i {} -o UserKnownHostsFile={} root@{a}   # {n}\n",
            info.key.display(),
            info.known_hosts.display()
        ));
    }
    s.push_str(&format!(
        "tear down:    {} sandbox down --name {}\n",
        self_command(),
        info.name
    ));
    s
}

/// Stops the hosts, the proxy and the file server of sandbox `name` and removes every
/// namespace, link, bridge, mount and file it made (the image cache stays). Succeeds if
/// nothing of it exists.
pub fn down(name: &str) -> Result<()> {
    names::check_sandbox_name(name)?;
    if !teardown::exists(name) {
        return Ok(());
    }
    preflight::require_root("down")?;
    teardown::teardown(name)
}

/// A table of the sandbox `name` (or of all sandboxes): hosts, addresses, state.
pub fn status(name: Option<&str>) -> Result<String> {
    if let Some(n) = name {
        names::check_sandbox_name(n)?;
    }
    Ok(status::status_text(name))
}

/// Folder of the sandbox `name` (it may not exist).
pub fn sandbox_dir(name: &str) -> PathBuf {
    Layout::new(name).dir
}
