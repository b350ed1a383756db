//! `download` on a host without curl and wget (a debootstrap minbase install): the controller
//! fetches the URL and streams it to the host, which checks size and sha256 before the
//! file replaces `dest`. The host is a real sshd on loopback whose sessions get a PATH of
//! every program of this machine except curl and wget (sshd_config `SetEnv`); the URL is
//! served by the sandbox's file server on loopback. tests/slurm_e2e.rs's site lane does the
//! same on minimal sandbox hosts.
//!
//! - a dry run says the download goes through the controller, and changes nothing;
//! - the run makes the file with the right content, owner and mode; the next run is ok;
//! - a wrong `sha256` fails on the controller's check, and leaves no file behind;
//! - the same with a `sha512` (the controller checks that, the host the transfer);
//! - a controller without curl or wget either: an error naming both, in a dry run too;
//! - two destinations of the same URL in one run: the controller fetches it once.

mod common;
use common::*;

use std::path::Path;

/// A folder of links to every program in /usr/bin, /usr/sbin, /bin and /sbin but curl
/// and wget.
fn path_without_fetchers(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for d in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let n = e.file_name();
            if n == "curl" || n == "wget" {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), dir.join(&n));
        }
    }
}

const RECIPE: &str = r#"
fn defaults() { #{ url: "", sha: "" } }
directory("/DEST");
download(`${vars.url}/payload.bin`, "/DEST/a.bin", #{ALGO: vars.sha, pin: "sha", mode: "0640"});
download(`${vars.url}/payload.bin`, "/DEST/b.bin", #{ALGO: vars.sha, pin: "sha"});
"#;

#[test]
fn a_host_without_curl_or_wget_gets_the_file_through_the_controller() {
    through_the_controller("sha256");
}

#[test]
fn a_download_pinned_by_sha512_goes_through_the_controller_too() {
    through_the_controller("sha512");
}

/// The test above, the download pinned by `algo` ("sha256" or "sha512").
fn through_the_controller(algo: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bin = tmp.path().join("bin");
    path_without_fetchers(&bin);
    let sshd = Sshd::start_with("127.0.0.1", &format!("SetEnv PATH={}", bin.display()));
    let inv = sshd.inventory("bare", "");
    let files = tmp.path().join("files");
    std::fs::create_dir_all(&files).expect("mkdir");
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(files.join("payload.bin"), &payload).expect("payload");
    let sha = hex_sum(algo, &payload);
    let zero = "0".repeat(sha.len());
    let served = ServedFiles::start(&files);
    let url = served.1.clone();
    let dest = tmp.path().join("dest");
    let recipe = tmp.path().join("dl.rhai");
    std::fs::write(
        &recipe,
        RECIPE
            .replace("/DEST", &dest.to_string_lossy())
            .replace("ALGO", algo),
    )
    .expect("recipe");

    // The host really has no fetcher: the same session's PATH has neither.
    let probe = Test::new()
        .arg("run")
        .arg(write(tmp.path(), "p.rhai", "let r = probe(\"command -v curl || command -v wget\"); if r.ok { fail(\"a fetcher: \" + r.stdout); }"))
        .args(["--group", "all", "-i"])
        .arg(&inv)
        .run();
    assert!(probe.success(), "{}", probe.show());

    let cmd = |extra: &[&str], sha: &str| {
        Test::new()
            .arg("run")
            .arg(&recipe)
            .args(["--group", "all", "--json", "-i"])
            .arg(&inv)
            .args([
                "--var",
                &format!("url={url}"),
                "--var",
                &format!("sha={sha}"),
            ])
            .args(extra)
    };
    let run = |extra: &[&str], sha: &str| cmd(extra, sha).run();
    // Dry run: says which way, changes nothing.
    let d = run(&["--dry-run"], &sha);
    assert!(d.success(), "{}", d.show());
    assert!(
        d.stdout
            .contains("on the controller: bare has neither curl nor wget"),
        "{}",
        d.show()
    );
    assert!(!dest.exists(), "a dry run made {}", dest.display());

    // A controller without curl or wget either: said before anything runs, dry run too.
    for extra in [&["--dry-run"][..], &[]] {
        let n = cmd(extra, &sha).env("PATH", &bin).run();
        assert!(!n.success(), "{}", n.show());
        assert!(
            n.all().contains("neither has the controller"),
            "{}",
            n.show()
        );
    }
    assert!(!dest.join("a.bin").exists());

    // A wrong checksum: refused, nothing left.
    let bad = run(&[], &zero);
    assert!(!bad.success(), "{}", bad.show());
    for want in [
        "checksum mismatch",
        &format!("(fetched on the controller) has {algo} {sha}"),
        &format!("expected {zero}"),
        &format!("set sha to its {algo}"),
    ] {
        assert!(bad.all().contains(want), "no {want:?}\n{}", bad.show());
    }
    assert!(!dest.join("a.bin").exists());

    // The run: both files, right content and mode.
    let r = run(&[], &sha);
    assert!(r.success(), "{}", r.show());
    for f in ["a.bin", "b.bin"] {
        assert_eq!(
            std::fs::read(dest.join(f)).expect("downloaded"),
            payload,
            "{f}"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dest.join("a.bin"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640);
    // Nothing left in the destination folder but the two files (no temporary files).
    let mut names: Vec<String> = std::fs::read_dir(&dest)
        .expect("dest")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["a.bin", "b.bin"]);
    // Second run: nothing to do.
    let r2 = run(&[], &sha);
    assert!(r2.success(), "{}", r2.show());
    let changed = r2
        .steps()
        .iter()
        .filter(|v| v["status"] == "changed")
        .count();
    assert_eq!(changed, 0, "{}", r2.show());
}

fn hex_sum(algo: &str, b: &[u8]) -> String {
    use sha2::Digest;
    match algo {
        "sha512" => hex::encode(sha2::Sha512::digest(b)),
        _ => hex::encode(sha2::Sha256::digest(b)),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}
