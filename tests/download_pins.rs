//! Nothing is unpacked or installed from a download nobody verified. The host is a real
//! sshd on loopback (this machine, with its curl), the files come from the sandbox's file
//! server on loopback, and the recipe downloads an archive, unpacks it and "installs" it,
//! as slurm_build.rhai does with Slurm's tarball:
//!
//! - pinned, as the demo and the sandbox lanes pin every file they serve: it runs;
//! - one byte changed on the file server: refused before anything is unpacked or installed,
//!   with the expected and the actual sha256 and the variable to change, and no file left;
//! - no sha256: refused before anything is fetched (the URL points at a closed port, so a
//!   fetch would have said something else), naming the variable;
//! - "unverified" (a site's explicit choice): it runs, and the dry run and the run each
//!   print one warning line naming the file and the variable;
//! - `recipe check` lists the recipe's download and says where its pin comes from.

mod common;
use common::*;

use std::path::Path;

const RECIPE: &str = r#"
fn defaults() { #{ url: "", app_sha256: "" } }
directory("/DEST");
download(`${vars.url}/app.tar.gz`, "/DEST/app.tar.gz", #{sha256: vars.app_sha256, pin: "app_sha256"});
unpack("/DEST/app.tar.gz", "/DEST/tree", #{creates: "/DEST/tree/app.txt"});
sh("cp /DEST/tree/app.txt /DEST/installed", #{creates: "/DEST/installed"});
"#;

fn hex_sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// A gzip'd tar archive holding app.txt.
fn archive(dir: &Path) -> Vec<u8> {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("app.txt"), "the application\n").expect("write");
    let out = dir.join("app.tar.gz");
    let st = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(&src)
        .arg("app.txt")
        .status()
        .expect("tar");
    assert!(st.success());
    std::fs::read(&out).expect("archive")
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_tampered_or_unpinned_download_is_refused_before_anything_is_unpacked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sshd = Sshd::start();
    let inv = sshd.inventory("h1", "");
    let files = tmp.path().join("files");
    std::fs::create_dir_all(&files).expect("mkdir");
    let good = archive(tmp.path());
    let pin = hex_sha(&good);
    // The file server's copy, one byte changed.
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x01;
    let bad_sha = hex_sha(&bad);
    std::fs::write(files.join("app.tar.gz"), &bad).expect("serve");
    let served = ServedFiles::start(&files);
    let dest = tmp.path().join("dest");
    let recipe = tmp.path().join("app.rhai");
    std::fs::write(&recipe, RECIPE.replace("/DEST", &dest.to_string_lossy())).expect("recipe");
    let run = |url: &str, sha: &str, extra: &[&str]| {
        Test::new()
            .arg("run")
            .arg(&recipe)
            .args(["--group", "all", "-i"])
            .arg(&inv)
            .args(["--var", &format!("url={url}")])
            .args(["--var", &format!("app_sha256={sha}")])
            .args(extra)
            .run()
    };

    // Tampered on the server: refused with both checksums and the variable; nothing
    // unpacked, nothing installed, no file (nor temporary file) left.
    let r = run(&served.1, &pin, &[]);
    assert!(!r.success(), "{}", r.show());
    let all = r.all();
    for want in [
        "checksum mismatch",
        &format!("expected {pin}"),
        &format!("sha256 {bad_sha}"),
        "app_sha256",
    ] {
        assert!(all.contains(want), "no {want:?} in\n{}", r.show());
    }
    assert_eq!(
        names(&dest),
        Vec::<String>::new(),
        "left behind in {dest:?}"
    );

    // No sha256: refused before anything is fetched, with what to set.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let closed = format!("http://127.0.0.1:{port}");
    for extra in [&["--dry-run"][..], &[]] {
        let r = run(&closed, "", extra);
        assert!(!r.success(), "{}", r.show());
        let all = r.all();
        assert!(
            all.contains("refused") && all.contains("app_sha256") && all.contains("unverified"),
            "{}",
            r.show()
        );
        assert!(!all.contains("curl"), "it fetched:\n{}", r.show());
    }
    assert!(!dest.join("installed").exists());

    // The server's file put right: the pinned download runs, and the next run is ok.
    std::fs::write(files.join("app.tar.gz"), &good).expect("serve");
    let r = run(&served.1, &pin, &[]);
    assert!(r.success(), "{}", r.show());
    assert_eq!(
        std::fs::read_to_string(dest.join("installed")).expect("installed"),
        "the application\n"
    );
    let r = run(&served.1, &pin, &["--json"]);
    assert!(r.success(), "{}", r.show());
    assert!(
        r.steps().iter().all(|s| s["status"] != "changed"),
        "{}",
        r.show()
    );

    // "unverified": taken, with one warning line in the dry run and in the run (even -q).
    std::fs::remove_dir_all(&dest).expect("rm");
    for extra in [&["--dry-run"][..], &["-q"]] {
        let r = run(&served.1, "unverified", extra);
        assert!(r.success(), "{}", r.show());
        let warned: Vec<&str> = r
            .stdout
            .lines()
            .filter(|l| l.contains("is not verified"))
            .collect();
        assert_eq!(warned.len(), 1, "{}", r.show());
        assert!(
            warned[0].contains("app.tar.gz") && warned[0].contains("set app_sha256"),
            "{}",
            warned[0]
        );
    }
    assert!(dest.join("installed").exists());
}

#[test]
fn recipe_check_lists_the_downloads_and_their_pins() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = tmp.path().join("dl.rhai");
    std::fs::write(
        &p,
        r#"
fn defaults() { #{ url: "http://m/x", x_sha256: "" } }
let computed = "a";
download(vars.url, "/a", #{sha256: vars.x_sha256, pin: "x_sha256"});
download(vars.url, "/b", #{sha256: "0000000000000000000000000000000000000000000000000000000000000000"});
download(vars.url, "/c", #{verify: false});
download(vars.url, "/d", #{sha256: "unverified"});
download(vars.url, "/e", #{sha256: computed});
let o = #{};
download(vars.url, "/f", o);
play("other.rhai", #{hosts: []});
"#,
    )
    .expect("write");
    let r = Test::new().arg("check").arg(&p).run();
    assert!(r.success(), "{}", r.show());
    let all = r.all();
    for (line, want) in [
        (4, "sha256 from vars.x_sha256"),
        (5, "pinned (a literal sha256)"),
        (6, "UNPINNED: verify: false"),
        (7, "UNPINNED: sha256 \"unverified\""),
        (8, "cannot see"),
        (10, "cannot see"),
        (
            11,
            "cannot see the downloads of the recipes it plays (other.rhai)",
        ),
    ] {
        let at = format!("dl.rhai:{line}:");
        let l = all
            .lines()
            .find(|l| l.contains(&at))
            .unwrap_or_else(|| panic!("no line for {at} in\n{all}"));
        assert!(l.contains(want), "{at}: no {want:?} in {l}");
    }
    // A download that is certain to be refused is an error now, before any host (exit 2).
    for call in [
        r#"download("http://m/x", "/d");"#,
        r#"download("http://m/x", "/d", #{mode: "0644"});"#,
        r#"download("http://m/x", "/d", #{sha256: ""});"#,
    ] {
        std::fs::write(&p, format!("\n{call}\n")).expect("write");
        let r = Test::new().arg("check").arg(&p).run();
        assert_eq!(r.code, 2, "{call}: {}", r.show());
        assert!(
            r.all().contains("dl.rhai:2:1")
                && r.all().contains("download without a sha256 is refused"),
            "{call}: {}",
            r.show()
        );
    }
}

#[test]
fn a_slurm_version_outside_the_table_is_refused_before_any_host() {
    // slurm_build.rhai's validate(): exit 2, the file and the variable to set, no host.
    let r = Test::new()
        .args(["run", "slurm_build.rhai", "--local", "--dry-run"])
        .args(["--var", "slurm_version=23.11.1"])
        .run();
    assert_eq!(r.code, 2, "{}", r.show());
    for want in [
        "slurm-wlm_23.11.1.orig.tar.gz",
        "set slurm_sha256",
        "no host was touched",
    ] {
        assert!(r.all().contains(want), "no {want:?}\n{}", r.show());
    }
    // The default version is in the table: the same dry run passes validate().
    let r = Test::new()
        .args(["run", "slurm_build.rhai", "--local", "--dry-run"])
        .args([
            "--var",
            "slurm_version=24.11.5",
            "--var",
            "slurm_build_packages=[]",
        ])
        .run();
    assert!(!r.all().contains("refuses to run"), "{}", r.show());
}

/// pins::apt_key on this machine (real gpg): Debian's bookworm release key through a file://
/// URL is taken with its fingerprint and refused with another.
#[test]
fn an_apt_key_is_checked_against_its_pinned_fingerprint() {
    let key = Path::new("/usr/share/keyrings/debian-archive-bookworm-stable.gpg");
    assert!(key.is_file(), "debian-archive-keyring is not installed");
    let fpr = "4D64FEC119C2029067D6E791F8D2585B8783D481";
    let tmp = tempfile::tempdir().expect("tempdir");
    let recipe = tmp.path().join("key.rhai");
    std::fs::write(
        &recipe,
        r#"import "pins" as pins;
fn defaults() { #{ key: "", fpr: "", dest: "" } }
sh(pins::apt_key(`file://${vars.key}`, vars.dest, vars.fpr, "the_fingerprint_var"),
   #{name: "key", unless: pins::apt_key_ok(vars.dest, vars.fpr)});
"#,
    )
    .expect("write");
    let dest = tmp.path().join("kr.gpg");
    let run = |fpr: &str| {
        Test::new()
            .args(["run", "--local"])
            .arg(&recipe)
            .args(["--var", &format!("key={}", key.display())])
            .args(["--var", &format!("fpr={fpr}")])
            .args(["--var", &format!("dest={}", dest.display())])
            .env("GNUPGHOME", tmp.path())
            .run()
    };
    let wrong = format!("0000{}", &fpr[4..]);
    let r = run(&wrong);
    assert!(!r.success(), "{}", r.show());
    for want in [fpr, wrong.as_str(), "the_fingerprint_var"] {
        assert!(r.all().contains(want), "no {want:?}\n{}", r.show());
    }
    assert!(!dest.exists(), "a refused key was installed");
    // Spaced and lower-case, as a publisher may print it.
    let spaced = "4d64 fec1 19c2 0290 67d6  e791 f8d2 585b 8783 d481";
    let r = run(spaced);
    assert!(r.success(), "{}", r.show());
    assert_eq!(
        std::fs::read(&dest).expect("keyring"),
        std::fs::read(key).expect("key")
    );
    // Next run: the keyring there holds that key, nothing to do; with another pin, the
    // keyring there is not taken as it is: the key is fetched again and refused.
    let r = run(spaced);
    assert!(r.success() && r.all().contains("changed=0"), "{}", r.show());
    let r = run(&wrong);
    assert!(
        !r.success() && r.all().contains("the_fingerprint_var"),
        "{}",
        r.show()
    );
}
