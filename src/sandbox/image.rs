//! The cached base image: a Debian root file system built once with debootstrap, keyed by release, mirror and package list.

use super::paths;
use super::tools::{self, CHROOT, DEBOOTSTRAP};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A Debian release the sandbox can boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Release {
    /// Debian 12, oldstable.
    #[default]
    Bookworm,
    /// Debian 13, stable.
    Trixie,
}

impl Release {
    pub const ALL: [Release; 2] = [Release::Bookworm, Release::Trixie];

    /// The suite name debootstrap and apt use.
    pub fn suite(self) -> &'static str {
        match self {
            Release::Bookworm => "bookworm",
            Release::Trixie => "trixie",
        }
    }

    /// Debian's version number.
    pub fn version(self) -> &'static str {
        match self {
            Release::Bookworm => "12",
            Release::Trixie => "13",
        }
    }

    /// Accepts the suite name or the version number (`trixie`, `13`, `debian13`).
    pub fn parse(s: &str) -> Result<Release> {
        let t = s.trim().to_ascii_lowercase();
        let t = t
            .strip_prefix("debian")
            .unwrap_or(&t)
            .trim_start_matches('-');
        for r in Release::ALL {
            if t == r.suite() || t == r.version() {
                return Ok(r);
            }
        }
        let known: Vec<String> = Release::ALL
            .iter()
            .map(|r| format!("{} ({})", r.suite(), r.version()))
            .collect();
        bail!(
            "unknown release {s:?}: the sandbox boots {}",
            known.join(" or ")
        )
    }
}

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.suite())
    }
}
/// Mirror used by debootstrap (and by apt inside the hosts, through the proxy).
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Overrides the mirror (an air-gapped site's own).
pub const MIRROR_ENV: &str = "RECIPE_SANDBOX_MIRROR";

/// Packages every image holds: systemd as PID 1, sshd, and what recipes lean on.
pub const BASE_PACKAGES: &[&str] = &[
    "ca-certificates",
    "curl",
    "dbus",
    "iproute2",
    "openssh-server",
    "procps",
    "sudo",
    "systemd",
    "systemd-sysv",
];

/// Packages of a minimal image (`sandbox up --minimal`), like a site's debootstrap minbase
/// install: systemd as PID 1 and sshd, no curl, wget, sudo, procps or CA certificates.
pub const MINIMAL_PACKAGES: &[&str] = &["dbus", "openssh-server", "systemd", "systemd-sysv"];

/// Bump when the way an image is made changes, so old caches are not reused.
const FORMAT: &str = "recipe-sandbox-image-v1";

/// sshd drop-in: only the host key the sandbox provides, no passwords.
const SSHD_DROPIN: &str = "# Written by recipe sandbox.\n\
HostKey /etc/ssh/ssh_host_ed25519_key\n\
PasswordAuthentication no\n\
KbdInteractiveAuthentication no\n\
PermitRootLogin prohibit-password\n\
UseDNS no\n";

/// Units that make no sense in a throw-away host, or that would take apt's lock at random.
const DISABLED_UNITS: &[&str] = &[
    "timers.target.wants/apt-daily.timer",
    "timers.target.wants/apt-daily-upgrade.timer",
    "timers.target.wants/dpkg-db-backup.timer",
    "timers.target.wants/e2scrub_all.timer",
    "timers.target.wants/fstrim.timer",
    "multi-user.target.wants/e2scrub_reap.service",
];

/// A Debian package name: lower-case letters, digits, `+ - .`, at least two characters.
pub fn check_package_name(p: &str) -> Result<()> {
    let ok = p.len() >= 2
        && p.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && p.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if !ok {
        bail!("{p:?} is not a Debian package name");
    }
    Ok(())
}

/// The full, sorted package list of an image with these extra packages (on the minimal
/// base with `minimal`).
pub fn package_list(extra: &[String], minimal: bool) -> Result<Vec<String>> {
    let base = if minimal {
        MINIMAL_PACKAGES
    } else {
        BASE_PACKAGES
    };
    let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    for p in extra {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        check_package_name(p)?;
        v.push(p.to_string());
    }
    v.sort();
    v.dedup();
    Ok(v)
}

pub fn mirror() -> String {
    std::env::var(MIRROR_ENV)
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| DEFAULT_MIRROR.to_string())
}

/// Cache key: a hash of everything that decides the image's content.
pub fn cache_key(release: Release, packages: &[String], mirror: &str) -> String {
    let mut h = Sha256::new();
    h.update(FORMAT.as_bytes());
    h.update(b"\n");
    h.update(release.suite().as_bytes());
    h.update(b"\n");
    h.update(mirror.as_bytes());
    for p in packages {
        h.update(b"\n");
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..8])
}

/// A cached image.
#[derive(Debug, Clone)]
pub struct Image {
    pub key: String,
    pub dir: PathBuf,
    pub release: Release,
}

impl Image {
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    fn complete_marker(&self) -> PathBuf {
        self.dir.join("complete")
    }
    pub fn is_complete(&self) -> bool {
        self.complete_marker().is_file() && self.rootfs().join("sbin/init").exists()
    }
}

/// An exclusive lock on the image cache, released on drop.
struct CacheLock {
    _file: File,
}

fn lock_cache(dir: &Path) -> Result<CacheLock> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create image cache {}", dir.display()))?;
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        bail!(
            "cannot lock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(CacheLock { _file: file })
}

/// The cache entry for this release and these extra packages (built or not).
pub fn lookup(release: Release, extra: &[String], minimal: bool) -> Result<Image> {
    let packages = package_list(extra, minimal)?;
    let key = cache_key(release, &packages, &mirror());
    Ok(Image {
        dir: paths::images_dir().join(&key),
        key,
        release,
    })
}

/// The image for this release and these extra packages, built first if it is not cached yet.
pub fn ensure(release: Release, extra: &[String], minimal: bool) -> Result<Image> {
    let packages = package_list(extra, minimal)?;
    let mirror = mirror();
    let images = paths::images_dir();
    let image = lookup(release, extra, minimal)?;
    if image.is_complete() {
        return Ok(image);
    }
    let _lock = lock_cache(&images)?;
    if image.is_complete() {
        return Ok(image); // built by someone else while we waited
    }
    build(&image, &packages, &mirror, &images)?;
    Ok(image)
}

fn build(image: &Image, packages: &[String], mirror: &str, images: &Path) -> Result<()> {
    tools::require(DEBOOTSTRAP)?;
    let tmp = images.join(format!(".build-{}", image.key));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("cannot remove old partial build {}", tmp.display()))?;
    }
    if image.dir.exists() {
        std::fs::remove_dir_all(&image.dir)
            .with_context(|| format!("cannot remove incomplete image {}", image.dir.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let rootfs = tmp.join("rootfs");
    let log = tmp.join("debootstrap.log");
    let suite = image.release.suite();
    eprintln!(
        "building the base image (debootstrap {suite}, {} packages) in {}; this takes a few minutes once, later runs reuse it",
        packages.len(),
        image.dir.display()
    );
    let started = Instant::now();
    let log_file =
        File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let log_err = log_file.try_clone()?;
    let include = format!("--include={}", packages.join(","));
    let mut cmd = tools::command(DEBOOTSTRAP)?;
    cmd.arg("--variant=minbase")
        .arg(&include)
        .arg(suite)
        .arg(&rootfs)
        .arg(mirror)
        .stdout(log_file)
        .stderr(log_err);
    let status = cmd.status().context("cannot run debootstrap")?;
    if !status.success() {
        let failed_log = images.join(format!("build-{}-failed.log", image.key));
        let _ = std::fs::copy(&log, &failed_log);
        let tail = tools::tail(&log, 20);
        let _ = std::fs::remove_dir_all(&tmp);
        bail!(
            "debootstrap failed ({status}) building the base image; last lines of {}:\n{tail}",
            failed_log.display()
        );
    }
    customize(&rootfs, mirror, image.release).context("cannot prepare the base image")?;
    std::fs::write(tmp.join("packages.txt"), packages.join("\n") + "\n")?;
    std::fs::write(tmp.join("release"), format!("{suite}\n"))?;
    std::fs::write(tmp.join("complete"), format!("{FORMAT}\n"))?;
    std::fs::rename(&tmp, &image.dir)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), image.dir.display()))?;
    eprintln!(
        "base image built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn write(root: &Path, rel: &str, text: &str, mode: u32) -> Result<()> {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Replace symlinks too (e.g. resolv.conf), never write through them.
    let _ = std::fs::remove_file(&p);
    std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Changes that hold for every host: no host keys of its own, no build-machine identity.
fn customize(root: &Path, mirror: &str, release: Release) -> Result<()> {
    // debootstrap leaves package lists of the suite; make sure apt has them.
    let lists = root.join("var/lib/apt/lists");
    let has_lists = std::fs::read_dir(&lists)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
        })
        .unwrap_or(false);
    if !has_lists {
        tools::run(
            CHROOT,
            [root.as_os_str(), "apt-get".as_ref(), "update".as_ref()],
        )
        .context("apt-get update in the new image failed")?;
    }
    let ssh = root.join("etc/ssh");
    if let Ok(rd) = std::fs::read_dir(&ssh) {
        for e in rd.filter_map(|e| e.ok()) {
            if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                std::fs::remove_file(e.path())?;
            }
        }
    }
    write(
        root,
        "etc/ssh/sshd_config.d/10-recipe-sandbox.conf",
        SSHD_DROPIN,
        0o644,
    )?;
    // Empty machine-id: each host gets its own.
    write(root, "etc/machine-id", "", 0o444)?;
    let dbus_id = root.join("var/lib/dbus/machine-id");
    let _ = std::fs::remove_file(&dbus_id);
    if dbus_id.parent().is_some_and(|p| p.is_dir()) {
        std::os::unix::fs::symlink("/etc/machine-id", &dbus_id)?;
    }
    write(root, "etc/hostname", "localhost\n", 0o644)?;
    write(
        root,
        "etc/hosts",
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        0o644,
    )?;
    // No name server: the hosts reach nothing but each other and the proxy.
    write(
        root,
        "etc/resolv.conf",
        "# recipe sandbox: names come from /etc/hosts\n",
        0o644,
    )?;
    write(
        root,
        "etc/apt/sources.list",
        &format!("deb {mirror} {} main\n", release.suite()),
        0o644,
    )?;
    for unit in DISABLED_UNITS {
        let _ = std::fs::remove_file(root.join("etc/systemd/system").join(unit));
    }
    let _ = tools::run(
        CHROOT,
        [root.as_os_str(), "apt-get".as_ref(), "clean".as_ref()],
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_list_is_sorted_deduped_and_checked() {
        let l = package_list(&["munge".into(), "curl".into(), " ".into()], false).unwrap();
        assert!(l.contains(&"munge".to_string()));
        assert_eq!(l.iter().filter(|p| *p == "curl").count(), 1);
        let mut sorted = l.clone();
        sorted.sort();
        assert_eq!(l, sorted);
        assert!(package_list(&["a,b".into()], false).is_err());
        assert!(package_list(&["--foo".into()], false).is_err());
        assert!(package_list(&["libstdc++6".into()], false).is_ok());
    }

    #[test]
    fn cache_key_depends_on_packages_and_mirror() {
        let a = package_list(&[], false).unwrap();
        // The minimal image is another image, without curl.
        let m = package_list(&[], true).unwrap();
        assert!(!m.contains(&"curl".to_string()) && m.contains(&"openssh-server".to_string()));
        assert_ne!(
            cache_key(Release::Bookworm, &a, DEFAULT_MIRROR),
            cache_key(Release::Bookworm, &m, DEFAULT_MIRROR)
        );
        let b = package_list(&["munge".into()], false).unwrap();
        let bw = Release::Bookworm;
        assert_eq!(
            cache_key(bw, &a, DEFAULT_MIRROR),
            cache_key(bw, &a, DEFAULT_MIRROR)
        );
        assert_ne!(
            cache_key(bw, &a, DEFAULT_MIRROR),
            cache_key(bw, &b, DEFAULT_MIRROR)
        );
        assert_ne!(
            cache_key(bw, &a, DEFAULT_MIRROR),
            cache_key(bw, &a, "http://mirror.example/debian")
        );
        assert_ne!(
            cache_key(bw, &a, DEFAULT_MIRROR),
            cache_key(Release::Trixie, &a, DEFAULT_MIRROR)
        );
        // order of the extra packages does not matter
        let c = package_list(&["x1".into(), "munge".into()], false).unwrap();
        let d = package_list(&["munge".into(), "x1".into()], false).unwrap();
        assert_eq!(
            cache_key(bw, &c, DEFAULT_MIRROR),
            cache_key(bw, &d, DEFAULT_MIRROR)
        );
        assert_eq!(cache_key(bw, &a, DEFAULT_MIRROR).len(), 16);
    }

    #[test]
    fn releases_parse_by_name_or_number() {
        assert_eq!(Release::parse("trixie").unwrap(), Release::Trixie);
        assert_eq!(Release::parse("13").unwrap(), Release::Trixie);
        assert_eq!(Release::parse("Debian12").unwrap(), Release::Bookworm);
        let e = Release::parse("sid").unwrap_err().to_string();
        assert!(e.contains("bookworm (12) or trixie (13)"), "{e}");
    }
}
