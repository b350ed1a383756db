//! scripts/fetch-slurm-source.sh and scripts/fetch-apptainer-deb.sh against a mirror that
//! has only part of what Debian's archive has: the suite's signed index (InRelease and the
//! Sources or Packages file it names) and the one file the script needs, served by the
//! sandbox's file server on loopback. A user's first demo run failed when the mirror
//! answered 404 for the source package's .dsc (apt-get source stops there); the scripts
//! must fetch only what they need and check it against the index's SHA256.
//!
//! - the script succeeds against the partial mirror (no .dsc, no .debian.tar.xz), and its
//!   file has the index's checksum;
//! - a corrupted file on the mirror (same size, one byte changed) is refused, nothing is
//!   left in the cache;
//! - a corrupted file in the cache is not reused.
//!
//! Needs Debian's archive (deb.debian.org: the real InRelease, whose signature apt checks
//! with this machine's Debian keyring) and apt; runs without root.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

const ARCHIVE: &str = "http://deb.debian.org/debian";

/// Fetches `rel` from Debian's archive into `mirror/rel` (apt's own downloader).
fn get(rel: &str, mirror: &Path) -> PathBuf {
    let dest = mirror.join(rel);
    std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
    let out = Command::new("/usr/lib/apt/apt-helper")
        .args(["-q", "-o", "APT::Sandbox::User=root", "download-file"])
        .arg(format!("{ARCHIVE}/{rel}"))
        .arg(&dest)
        .output()
        .expect("apt-helper");
    assert!(
        out.status.success(),
        "cannot fetch {rel} from {ARCHIVE}:\n{}",
        text(&out.stderr)
    );
    dest
}

/// A mirror with the suite's InRelease and the index file `index` (e.g.
/// `main/source/Sources.xz`), also under by-hash, where apt asks for it first.
fn partial_mirror(mirror: &Path, suite: &str, index: &str) {
    let inrel = get(&format!("dists/{suite}/InRelease"), mirror);
    let idx = get(&format!("dists/{suite}/{index}"), mirror);
    let sum = sha256_file(&idx);
    let dir = idx.parent().expect("parent").join("by-hash/SHA256");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(&idx, dir.join(&sum)).expect("copy");
    assert!(
        std::fs::read_to_string(inrel)
            .expect("InRelease")
            .contains(&sum),
        "{index} does not have the checksum InRelease gives"
    );
}

fn run_script(script: &str, cache: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(project().join("scripts").join(script));
    c.arg(cache);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the script runs")
}

/// The file the script printed, after checking it succeeded.
fn fetched(out: &std::process::Output, what: &str) -> PathBuf {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    PathBuf::from(text(&out.stdout).trim())
}

/// Flips one byte in the middle of `p` (same size).
fn corrupt(p: &Path) {
    let mut b = std::fs::read(p).expect("read");
    let i = b.len() / 2;
    b[i] ^= 0xff;
    std::fs::write(p, b).expect("write");
}

/// The script against the partial mirror, a corrupted mirror file and a corrupted cache.
/// `pool` is where the mirror holds the file (from the archive's path of it).
fn check_script(script: &str, env_mirror: &str, extra_env: &[(&str, &str)], index: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let suite = extra_env
        .iter()
        .find(|(k, _)| k.ends_with("_SUITE"))
        .map(|(_, v)| *v)
        .expect("suite");
    // The file itself, from the real archive (where the .dsc may well be missing too).
    let real = fetched(
        &run_script(script, &tmp.path().join("real"), extra_env),
        &format!("{script} against {ARCHIVE}"),
    );
    let name = real
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    let want = sha256_file(&real);

    // The mirror: the index and that one file, nothing else of the package.
    let mirror = tmp.path().join("mirror");
    partial_mirror(&mirror, suite, index);
    let pkg = name.split('_').next().expect("package");
    let pool = mirror.join(format!("pool/main/{}/{pkg}", &pkg[..1]));
    std::fs::create_dir_all(&pool).expect("mkdir");
    std::fs::copy(&real, pool.join(&name)).expect("copy");
    let served = ServedFiles::start(&mirror);
    let mut env: Vec<(&str, &str)> = extra_env.to_vec();
    env.push((env_mirror, served.1.as_str()));

    let cache = tmp.path().join("cache");
    let got = fetched(
        &run_script(script, &cache, &env),
        &format!("{script} against a mirror without the rest of the package"),
    );
    assert_eq!(got.file_name(), real.file_name());
    assert_eq!(sha256_file(&got), want, "{script} fetched another file");

    // A corrupted file in the cache is fetched again, not reused.
    corrupt(&got);
    let again = fetched(&run_script(script, &cache, &env), script);
    assert_eq!(
        sha256_file(&again),
        want,
        "{script} reused a corrupted cache file"
    );

    // A corrupted file on the mirror is refused; nothing is left in the cache.
    corrupt(&pool.join(&name));
    let cache2 = tmp.path().join("cache2");
    let out = run_script(script, &cache2, &env);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "{script} accepted a corrupted {name}:\n{}{err}",
        text(&out.stdout)
    );
    assert!(
        err.contains("could not fetch") && err.contains("SHA256:"),
        "{err}"
    );
    let left: Vec<String> = std::fs::read_dir(&cache2)
        .expect("cache2")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n != ".apt")
        .collect();
    assert!(left.is_empty(), "left in the cache: {left:?}");
}

#[test]
fn slurm_source_from_a_mirror_without_the_dsc() {
    check_script(
        "fetch-slurm-source.sh",
        "SLURM_SRC_MIRROR",
        &[("SLURM_SRC_SUITE", "trixie")],
        "main/source/Sources.xz",
    );
}

#[test]
fn apptainer_deb_from_a_partial_mirror() {
    let arch = text(
        &Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .expect("dpkg")
            .stdout,
    );
    let index = format!("main/binary-{}/Packages.xz", arch.trim());
    check_script(
        "fetch-apptainer-deb.sh",
        "APPTAINER_MIRROR",
        &[("APPTAINER_SUITE", "sid")],
        &index,
    );
}
