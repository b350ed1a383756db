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
//! - pinned by sha512 (Kubernetes lists only that for its tarballs): checked with sha512,
//!   the file already there held against it, a tampered one refused the same way.
//! - the pins the recipes ship cover the Kubernetes recipes' defaults (the recipes' own
//!   default URLs and versions), and a binaries install of a version outside the table is
//!   refused before any host, naming the variable.

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

fn hex_sha512(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha512::digest(b))
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

/// The host (a real sshd on loopback) with its inventory, the file server's folder
/// (empty) and the archive to serve.
fn loopback() -> (
    tempfile::TempDir,
    Sshd,
    std::path::PathBuf,
    std::path::PathBuf,
    Vec<u8>,
) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sshd = Sshd::start();
    let inv = sshd.inventory("h1", "");
    let files = tmp.path().join("files");
    std::fs::create_dir_all(&files).expect("mkdir");
    let good = archive(tmp.path());
    (tmp, sshd, inv, files, good)
}

/// `b` with one byte changed.
fn tampered(b: &[u8]) -> Vec<u8> {
    let mut bad = b.to_vec();
    let at = bad.len() / 2;
    bad[at] ^= 0x01;
    bad
}

#[test]
fn a_tampered_or_unpinned_download_is_refused_before_anything_is_unpacked() {
    let (tmp, _sshd, inv, files, good) = loopback();
    let pin = hex_sha(&good);
    // The file server's copy, one byte changed.
    let bad = tampered(&good);
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
fn defaults() { #{ url: "http://m/x", x_sha256: "", x_sha512: "" } }
let computed = "a";
download(vars.url, "/a", #{sha256: vars.x_sha256, pin: "x_sha256"});
download(vars.url, "/b", #{sha256: "0000000000000000000000000000000000000000000000000000000000000000"});
download(vars.url, "/c", #{verify: false});
download(vars.url, "/d", #{sha256: "unverified"});
download(vars.url, "/e", #{sha256: computed});
let o = #{};
download(vars.url, "/f", o);
play("other.rhai", #{hosts: []});
download(vars.url, "/g", #{sha512: vars.x_sha512, pin: "x_sha512"});
download(vars.url, "/h", #{sha512: "unverified"});
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
        (12, "sha512 from vars.x_sha512"),
        (13, "UNPINNED: sha512 \"unverified\""),
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

/// `recipe run RECIPE --local --dry-run` with `--var` for each of `vars`: validate() runs
/// first, and a refusal there touches no host.
fn dry_run_local(recipe: &str, vars: &[&str]) -> Output {
    let mut t = Test::new().args(["run", recipe, "--local", "--dry-run"]);
    for v in vars {
        t = t.args(["--var", v]);
    }
    t.run()
}

/// Refused by validate() (exit 2) with each of `wants` in the output.
fn expect_refused(r: &Output, wants: &[&str]) {
    assert_eq!(r.code, 2, "{}", r.show());
    for want in wants {
        assert!(r.all().contains(want), "no {want:?}\n{}", r.show());
    }
}

#[test]
fn a_slurm_version_outside_the_table_is_refused_before_any_host() {
    // slurm_build.rhai's validate(): exit 2, the file and the variable to set, no host.
    let r = dry_run_local("slurm_build.rhai", &["slurm_version=23.11.1"]);
    expect_refused(
        &r,
        &[
            "slurm-wlm_23.11.1.orig.tar.gz",
            "set slurm_sha256",
            "it touched no host",
        ],
    );
    // The default version is in the table: the same dry run passes validate().
    let r = dry_run_local(
        "slurm_build.rhai",
        &["slurm_version=24.11.5", "slurm_build_packages=[]"],
    );
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

const RECIPE512: &str = r#"
fn defaults() { #{ url: "", app_sha512: "" } }
directory("/DEST");
download(`${vars.url}/app.tar.gz`, "/DEST/app.tar.gz", #{sha512: vars.app_sha512, pin: "app_sha512"});
unpack("/DEST/app.tar.gz", "/DEST/tree", #{creates: "/DEST/tree/app.txt"});
"#;

#[test]
fn a_download_pinned_by_sha512_is_checked_with_it() {
    let (tmp, _sshd, inv, files, good) = loopback();
    let pin = hex_sha512(&good);
    let bad = tampered(&good);
    std::fs::write(files.join("app.tar.gz"), &bad).expect("serve");
    let served = ServedFiles::start(&files);
    let dest = tmp.path().join("dest");
    let recipe = tmp.path().join("app512.rhai");
    std::fs::write(&recipe, RECIPE512.replace("/DEST", &dest.to_string_lossy())).expect("recipe");
    let run = |sha: &str, extra: &[&str]| {
        Test::new()
            .arg("run")
            .arg(&recipe)
            .args(["--group", "all", "-i"])
            .arg(&inv)
            .args(["--var", &format!("url={}", served.1)])
            .args(["--var", &format!("app_sha512={sha}")])
            .args(extra)
            .run()
    };

    // Tampered: refused with both sha512s and the variable, before anything is unpacked.
    let r = run(&pin, &[]);
    assert!(!r.success(), "{}", r.show());
    for want in [
        "checksum mismatch",
        &format!("expected {pin}"),
        &format!("has sha512 {}", hex_sha512(&bad)),
        "set app_sha512 to its sha512",
    ] {
        assert!(r.all().contains(want), "no {want:?} in\n{}", r.show());
    }
    assert_eq!(
        names(&dest),
        Vec::<String>::new(),
        "left behind in {dest:?}"
    );

    // No sha512: refused before anything is fetched, naming the algorithm and the variable.
    let r = run("", &[]);
    assert!(
        !r.success() && r.all().contains("has no sha512") && r.all().contains("app_sha512"),
        "{}",
        r.show()
    );

    // The right file: taken and unpacked; the next run holds the file there against its
    // sha512 and changes nothing.
    std::fs::write(files.join("app.tar.gz"), &good).expect("serve");
    let r = run(&pin, &[]);
    assert!(r.success(), "{}", r.show());
    assert!(dest.join("tree/app.txt").exists(), "{}", r.show());
    let r = run(&pin, &["--json"]);
    assert!(r.success(), "{}", r.show());
    assert!(
        r.steps().iter().all(|s| s["status"] != "changed"),
        "{}",
        r.show()
    );
    // Another file where the download goes: fetched again (sha512 differs).
    std::fs::write(dest.join("app.tar.gz"), b"something else").expect("write");
    let r = run(&pin, &["--json"]);
    assert!(r.success(), "{}", r.show());
    assert!(
        r.steps().iter().any(|s| s["status"] == "changed"),
        "{}",
        r.show()
    );
    assert_eq!(std::fs::read(dest.join("app.tar.gz")).expect("read"), good);
}

/// The default of `key` in a recipe's `fn defaults()` (a string on its own line).
fn default_of(recipe: &str, key: &str) -> String {
    let text = std::fs::read_to_string(project().join("recipes").join(recipe)).expect("recipe");
    let at = format!("{key}: \"");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&at))
        .unwrap_or_else(|| panic!("no default {key} in {recipe}"));
    let rest = &line[line.find(&at).expect("key") + at.len()..];
    rest[..rest.find('"').expect("closing quote")].to_string()
}

/// The Node Binaries sha512 that kubernetes/kubernetes lists in its CHANGELOG, copied here
/// by hand apart from stdlib/pins.rhai (a changed pin is noticed).
const NODE_1_21_14_AMD64: &str = "35a28acfdbf15265b4d463ecf86cb7bd9c1261fbb2a273d83971e5080050048a4c970dd1daa341c9682d667040ff32be27ec9c6c2e36f51b3d32e673007255d1";
const NODE_1_21_14_ARM64: &str = "25bd250a333058dd544ae55e80716ee30dd4fa5159a56b5675c9be86df2eb87697c768adfd14ad558a7a0dc73238bc4a5978afb2e83f3574a83eef4f8dff7431";
const NODE_1_25_16_AMD64: &str = "f120b00facb8a03b1e6b2a675878a673ba6faf278c5d8df5ec907b7674ed56cf6489a2d374d2d0603e4f31eccc5d9a452e965fa17ac410f48831264bc8195612";
/// sha256 of flannel-io/flannel's Documentation/kube-flannel.yml at tag v0.22.3.
const FLANNEL_0_22_3: &str = "925b9ce96545f1bf2be71008a53de140360913eceb160d25b0a53fdd6d64ad1a";

#[test]
fn the_shipped_pins_cover_the_kubernetes_defaults() {
    // The recipes' own defaults: the node tarball's URL and the CNI manifest's.
    let node_url = default_of("k8s_node.rhai", "k8s_node_url");
    let cni_url = default_of("k8s_cni.rhai", "k8s_cni_manifest_url");
    let tmp = tempfile::tempdir().expect("tempdir");
    let recipe = tmp.path().join("shipped.rhai");
    std::fs::write(
        &recipe,
        r#"import "text" as text;
import "pins" as pins;
import "k8s_common" as k8s;
fn defaults() { #{ node_url: "", cni_url: "" } }
let versions = [k8s::version_of("", "sycri"), k8s::version_of("", "containerd"), "1.25.16"];
for v in versions {
    for a in ["amd64", "arm64"] {
        let url = text::fill(vars.node_url, #{version: v, arch: a});
        log(`node ${v} ${a}: [${pins::sha512("", pins::node_key(url, v))}]`);
    }
    log(`refusal ${v}: [${pins::node_refusal("", vars.node_url, v, "k8s_node_sha512")}]`);
}
log(`site pin first: [${pins::sha512("unverified", pins::node_key(text::fill(vars.node_url, #{version: "1.21.14", arch: "amd64"}), "1.21.14"))}]`);
log(`cni: [${pins::sha256("", vars.cni_url)}]`);
"#,
    )
    .expect("write");
    let r = Test::new()
        .args(["run", "--local", "--dry-run"])
        .arg(&recipe)
        .args(["--var", &format!("node_url={node_url}")])
        .args(["--var", &format!("cni_url={cni_url}")])
        .run();
    assert!(r.success(), "{}", r.show());
    let all = r.all();
    for want in [
        format!("node 1.21.14 amd64: [{NODE_1_21_14_AMD64}]"),
        format!("node 1.21.14 arm64: [{NODE_1_21_14_ARM64}]"),
        format!("node 1.25.16 amd64: [{NODE_1_25_16_AMD64}]"),
        "refusal 1.21.14: []".to_string(),
        "refusal 1.25.16: []".to_string(),
        // 1.35.9 (the containerd default, installed from pkgs.k8s.io): no pin shipped.
        "node 1.35.9 amd64: []".to_string(),
        "site pin first: [unverified]".to_string(),
        format!("cni: [{FLANNEL_0_22_3}]"),
    ] {
        assert!(all.contains(&want), "no {want:?} in\n{}", r.show());
    }
    let l = all
        .lines()
        .find(|l| l.contains("refusal 1.35.9: ["))
        .unwrap_or_else(|| panic!("no refusal line for 1.35.9\n{}", r.show()));
    assert!(
        l.contains("has no sha512")
            && l.contains("k8s_node_sha512")
            && l.contains("CHANGELOG-1.35.md"),
        "{l}"
    );

    // `recipe check` says where the node tarball's and the manifest's pins come from.
    let r = Test::new().args(["check", "k8s_node.rhai"]).run();
    assert!(
        r.all()
            .contains("sha512 from vars.k8s_node_sha512, else from stdlib/pins.rhai's table"),
        "{}",
        r.show()
    );
    let r = Test::new().args(["check", "k8s_cni.rhai"]).run();
    assert!(
        r.all().contains(
            "sha256 from vars.k8s_cni_manifest_sha256, else from stdlib/pins.rhai's table"
        ),
        "{}",
        r.show()
    );
}

#[test]
fn an_unpinned_kubernetes_binaries_install_is_refused_before_any_host() {
    // k8s_node.rhai's validate(): exit 2, the file, where upstream lists its checksum and the
    // variables to set (the node tarball's and crictl's), no host.
    let r = dry_run_local(
        "k8s_node.rhai",
        &["k8s_install=binaries", "k8s_version=1.28.15"],
    );
    expect_refused(
        &r,
        &[
            "of Kubernetes 1.28.15 has no sha512",
            "set k8s_node_sha512 to its sha512",
            "CHANGELOG/CHANGELOG-1.28.md",
            "set k8s_crictl_sha256",
            "it touched no host",
        ],
    );
    // A version the table pins, without crictl: the same dry run passes validate().
    let r = dry_run_local(
        "k8s_node.rhai",
        &[
            "k8s_install=binaries",
            "k8s_version=1.25.16",
            "k8s_crictl_url=",
        ],
    );
    assert!(!r.all().contains("refuses to run"), "{}", r.show());
}
