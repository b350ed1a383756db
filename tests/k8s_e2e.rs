//! End to end for the Kubernetes recipes (k8s.rhai and the recipes it plays, sycri.rhai)
//! on throw-away systemd hosts booted by `recipe sandbox`.
//!
//! What runs for real on the sandbox hosts: every recipe step and the engine; node
//! preparation (fstab, modules-load.d, sysctl.d; in these containers loading modules,
//! host sysctls and swap are skipped with a note); containerd from Debian's package with
//! `SystemdCgroup = true`, started and answering `ctr version`; the CNI plugins from
//! Debian linked into /opt/cni/bin (`bridge` answers CNI_COMMAND=VERSION); the downloads
//! with their checksum checks (the node tarball's sha512, the others' sha256); the kubelet unit and kubeadm drop-in under systemd; openssl
//! making the cluster CA and the recipe computing its hash; the token and the hash going
//! from the master to the workers through the engine; `make`/`make install` of a source
//! tarball, a systemd unit and an HTTP/2 check for sycri.
//!
//! What does NOT run: Kubernetes. kubeadm, kubelet, kubectl, crictl, Singularity and
//! Singularity-CRI cannot be installed on this machine; tests/standins/ holds stand-ins
//! for them (see its README.md), served by the sandbox file server as if they were the
//! release files. No container is started here and no pod runs: the sample pods (the Slurm
//! sample's image, in real containerd or real Apptainer behind the stand-ins) run in
//! tests/slurm_e2e.rs's Debian 13 lane. Nothing here says Kubernetes works.
//!
//! - `refusals_before_any_host`: sycri with Kubernetes 1.26+, Apptainer, or Singularity
//!   3.10 is refused by k8s.rhai before any host is contacted (no sandbox needed).
//! - `cluster_with_standins`: a dry run on fresh hosts changes nothing; k8s.rhai with
//!   containerd: the plays in order, every node Ready (no sample pods: see above), the
//!   token and the CA hash in no output; a second run changes nothing; on w3, the
//!   default sycri version's node tarball (1.21.14) with no site pin is held against the
//!   pin the recipes ship (the real release's sha512): the stand-in served there is refused
//!   before anything is unpacked or installed; w3 added joins;
//!   sycri.rhai on its own host (refusals, cgroup v2 refused, build, unit, socket,
//!   restart on change); the stand-ins refuse as the real programs: failed preflight by
//!   kubeadm's check names, a wrong CA hash, a missing token, unknown and removed flags,
//!   `--config` mixed with other flags; containerd too old for the version is refused; a
//!   half-done init is reported and recovered only with `k8s_reset=true`.
//!
//!   Then a second cluster (s1, s2): sycri as the runtime, Kubernetes 1.25 installed as
//!   packages by real apt from a local, signed stand-in of pkgs.k8s.io (see `apt_repo`),
//!   twice (second run 0 changed, /opt/cni/bin left to kubernetes-cni). kubeadm init and
//!   join run from configuration files; kubeadm refuses wrong API versions and kinds.
//!
//! Not covered here: Kubernetes 1.35 (the containerd default; Debian 12's containerd is
//! too old for it, see VERSION), hosts with more than one interface, and sycri on a
//! cgroup v2 host (the decision is checked by tests/stdlib.rs; these hosts share this
//! machine's cgroup v1).
//!
//! Needs root and the sandbox tools (debootstrap, systemd-container, tinyproxy), dpkg-dev
//! and gpg (the stand-in repository), and Debian's archive (containerd,
//! containernetworking-plugins, make). The sandbox is torn
//! down by a Drop guard, also when the test fails. Time on the 2-core test machine: see
//! docs/kubernetes.md.

mod common;
use common::sandbox::{self, assert_unchanged, Sandbox};
use common::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Debian 12's containerd (1.6.20) serves Kubernetes up to 1.28 (containerd's support
/// matrix): the recipes refuse the containerd default (1.35.9) there, so the test pins 1.28.
const VERSION: &str = "1.28.15";
const CRICTL: &str = "1.28.0";
const SYCRI: &str = "1.0.0-beta.7";
/// The second cluster: sycri as the runtime (CRI v1alpha2: kubelet up to 1.25) and the
/// packages install (pkgs.k8s.io starts at 1.24), from a local stand-in repository.
const PKG_VERSION: &str = "1.25.16";

fn require_root() {
    sandbox::require_root("k8s_e2e");
}

fn k8s_arch() -> &'static str {
    common::k8s_standins::arch()
}

/// A stand-in as served for `version`: the stand-ins model the version they are served as
/// (the `V=` line); kubeadm carries the API server after `__APISERVER__`.
fn standin(name: &str, version: &str) -> Vec<u8> {
    common::k8s_standins::standin(name, version)
}

/// A CNI plugin of the kubernetes-cni stand-in package: answers VERSION, nothing else.
const CNI_PLUGIN: &str = "#!/bin/sh\n# STAND-IN for a CNI plugin of pkgs.k8s.io's kubernetes-cni (tests/k8s_e2e.rs): VERSION only.\nif [ \"${CNI_COMMAND:-}\" = VERSION ]; then echo '{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.3.1\",\"0.4.0\",\"1.0.0\"]}'; exit 0; fi\necho '{\"code\":4,\"msg\":\"stand-in CNI plugin: VERSION only\"}'; exit 1\n";

/// One stand-in .deb built with dpkg-deb: `files` are (path, content, mode).
fn deb(out: &Path, control: &str, files: &[(&str, Vec<u8>, u32)], conffiles: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("root");
    std::fs::create_dir_all(root.join("DEBIAN")).expect("mkdir");
    std::fs::write(root.join("DEBIAN/control"), control).expect("control");
    if !conffiles.is_empty() {
        std::fs::write(root.join("DEBIAN/conffiles"), conffiles.join("\n") + "\n")
            .expect("conffiles");
    }
    for (path, body, mode) in files {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, body).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).expect("chmod");
    }
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&root)
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("dpkg-deb (package dpkg)");
    assert!(st.success(), "dpkg-deb --build {}", out.display());
}

/// A local stand-in of pkgs.k8s.io's repository for minor `PKG_VERSION`'s, served as
/// `k8s-apt/v1.X/deb/` (a flat repository like the real one): kubeadm, kubelet, kubectl,
/// cri-tools and kubernetes-cni as stand-in .debs whose control files declare what
/// kubernetes/release's package templates (cmd/krel/templates/latest: metadata.yaml and
/// the .spec files) declare for this version: kubelet depends on kubernetes-cni (>= 1.1.1),
/// mount, util-linux and recommends iptables; kubeadm on kubelet, kubectl (>= 1.19.0),
/// kubernetes-cni (>= 1.1.1), cri-tools (>= 1.25.0); kubernetes-cni owns /opt/cni/bin.
/// InRelease is signed with a key made here (Release.key, as pkgs.k8s.io serves it), so
/// the recipe's keyring and `signed-by` path runs as at a site; no `[trusted=yes]`.
fn apt_repo(dir: &Path) {
    let minor = PKG_VERSION.rsplit_once('.').expect("x.y.z").0;
    let repo = dir.join(format!("k8s-apt/v{minor}/deb"));
    std::fs::create_dir_all(&repo).expect("mkdir");
    let arch = k8s_arch();
    let k = format!("{PKG_VERSION}-1.1");
    let control = |name: &str, version: &str, section: &str, deps: &str, rec: &str| {
        let mut c = format!("Package: {name}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: recipe tests <k8s@sandbox.invalid>\nSection: {section}\nPriority: optional\n");
        if !deps.is_empty() {
            c += &format!("Depends: {deps}\n");
        }
        if !rec.is_empty() {
            c += &format!("Recommends: {rec}\n");
        }
        c += &format!("Description: STAND-IN for pkgs.k8s.io's {name} (tests/k8s_e2e.rs; not Kubernetes)\n Its dependencies are the real package's.\n");
        c
    };
    let unit = b"[Unit]\nDescription=kubelet: The Kubernetes Node Agent\nDocumentation=https://kubernetes.io/docs/\nWants=network-online.target\nAfter=network-online.target\n\n[Service]\nExecStart=/usr/bin/kubelet\nRestart=always\nStartLimitInterval=0\nRestartSec=10\n\n[Install]\nWantedBy=multi-user.target\n".to_vec();
    let dropin = b"[Service]\nEnvironment=\"KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf\"\nEnvironment=\"KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml\"\nEnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env\nEnvironmentFile=-/etc/default/kubelet\nExecStart=\nExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS\n".to_vec();
    deb(
        &repo.join(format!("kubelet_{k}_{arch}.deb")),
        &control(
            "kubelet",
            &k,
            "net",
            "kubernetes-cni (>= 1.1.1), mount, util-linux",
            "iptables (>= 1.8.4)",
        ),
        &[
            ("/usr/bin/kubelet", standin("kubelet", PKG_VERSION), 0o755),
            ("/usr/lib/systemd/system/kubelet.service", unit, 0o600),
            (
                "/etc/default/kubelet",
                b"KUBELET_EXTRA_ARGS=\n".to_vec(),
                0o644,
            ),
            ("/etc/kubernetes/manifests/.kubelet-keep", vec![], 0o644),
            ("/var/lib/kubelet/.kubelet-keep", vec![], 0o644),
        ],
        &["/etc/default/kubelet"],
    );
    deb(
        &repo.join(format!("kubeadm_{k}_{arch}.deb")),
        &control("kubeadm", &k, "admin", "kubelet (>= 1.19.0), kubectl (>= 1.19.0), kubernetes-cni (>= 1.1.1), cri-tools (>= 1.25.0)", ""),
        &[
            ("/usr/bin/kubeadm", standin("kubeadm", PKG_VERSION), 0o755),
            ("/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf", dropin, 0o644),
        ],
        &[],
    );
    deb(
        &repo.join(format!("kubectl_{k}_{arch}.deb")),
        &control("kubectl", &k, "admin", "", ""),
        &[("/usr/bin/kubectl", standin("kubectl", PKG_VERSION), 0o755)],
        &[],
    );
    let crictl = std::fs::read(project().join("tests/standins/crictl")).expect("crictl");
    deb(
        &repo.join(format!("cri-tools_1.25.0-1.1_{arch}.deb")),
        &control("cri-tools", "1.25.0-1.1", "admin", "", ""),
        &[("/usr/bin/crictl", crictl, 0o755)],
        &[],
    );
    let paths: Vec<String> = ["bridge", "host-local", "loopback", "portmap", "flannel"]
        .iter()
        .map(|p| format!("/opt/cni/bin/{p}"))
        .collect();
    let mut cni: Vec<(&str, Vec<u8>, u32)> = paths
        .iter()
        .map(|p| (p.as_str(), CNI_PLUGIN.as_bytes().to_vec(), 0o755))
        .collect();
    cni.push(("/etc/cni/net.d/.kubernetes-cni-keep", vec![], 0o644));
    deb(
        &repo.join(format!("kubernetes-cni_1.1.1-1.1_{arch}.deb")),
        &control("kubernetes-cni", "1.1.1-1.1", "net", "", ""),
        &cni,
        &[],
    );
    // Packages, Packages.gz, Release with their sha256, signed as InRelease.
    let out = Command::new("dpkg-scanpackages")
        .args(["--multiversion", "."])
        .current_dir(&repo)
        .stderr(std::process::Stdio::null())
        .output()
        .expect("dpkg-scanpackages (package dpkg-dev)");
    assert!(out.status.success(), "dpkg-scanpackages failed");
    std::fs::write(repo.join("Packages"), &out.stdout).expect("Packages");
    let st = Command::new("gzip")
        .args(["-9kn", "Packages"])
        .current_dir(&repo)
        .status()
        .expect("gzip");
    assert!(st.success());
    let date = Command::new("date")
        .args(["-u", "-R"])
        .env("LC_ALL", "C")
        .output()
        .expect("date");
    let mut release = format!(
        "Origin: recipe-tests\nLabel: stand-in of pkgs.k8s.io v{minor}\nDate: {}\nArchitectures: {arch}\nSHA256:\n",
        text(&date.stdout).trim()
    );
    for f in ["Packages", "Packages.gz"] {
        let p = repo.join(f);
        let len = std::fs::metadata(&p).expect("stat").len();
        release += &format!(" {} {len} {f}\n", sha256_file(&p));
    }
    std::fs::write(repo.join("Release"), release).expect("Release");
    let home = tempfile::tempdir().expect("tempdir");
    let gpg = |args: &[&str]| {
        let o = Command::new("gpg")
            .arg("--homedir")
            .arg(home.path())
            .args([
                "--batch",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .current_dir(&repo)
            .output()
            .expect("gpg (package gpg)");
        assert!(o.status.success(), "gpg {args:?}: {}", text(&o.stderr));
        o.stdout
    };
    gpg(&[
        "--quick-gen-key",
        "recipe k8s_e2e stand-in repository <k8s@sandbox.invalid>",
        "ed25519",
        "sign",
        "never",
    ]);
    let key = gpg(&["--armor", "--export"]);
    std::fs::write(repo.join("Release.key"), key).expect("Release.key");
    // The recipe takes a repository key only by its pinned fingerprint: the test pins its own.
    let colons = String::from_utf8_lossy(&gpg(&["--with-colons", "--fingerprint"])).into_owned();
    let fpr = colons
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .and_then(|l| l.split(':').find(|f| f.len() == 40))
        .expect("the repository key's fingerprint")
        .to_string();
    std::fs::write(dir.join("k8s-apt/fingerprint"), fpr).expect("fingerprint");
    gpg(&["--clearsign", "-o", "InRelease", "Release"]);
    // gpg started an agent for that folder: it ends with it.
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(home.path())
        .args(["--kill", "all"])
        .status();
}

/// The sycri default (k8s_common.rhai), whose node tarball the recipes ship a pin for.
const PINNED: &str = "1.21.14";

/// sha512 of Kubernetes 1.21.14's kubernetes-node-linux-<arch>.tar.gz, as
/// kubernetes/kubernetes CHANGELOG/CHANGELOG-1.21.md lists it (copied here by hand, apart
/// from stdlib/pins.rhai, so that a changed pin is noticed).
fn pinned_sha512() -> &'static str {
    match k8s_arch() {
        "amd64" => "35a28acfdbf15265b4d463ecf86cb7bd9c1261fbb2a273d83971e5080050048a4c970dd1daa341c9682d667040ff32be27ec9c6c2e36f51b3d32e673007255d1",
        _ => "25bd250a333058dd544ae55e80716ee30dd4fa5159a56b5675c9be86df2eb87697c768adfd14ad558a7a0dc73238bc4a5978afb2e83f3574a83eef4f8dff7431",
    }
}

/// The served folder, laid out like the release downloads, with the stand-ins (also a
/// stand-in node tarball where the pinned 1.21.14's would be).
fn served_files(dir: &Path) {
    common::k8s_standins::serve(dir, VERSION, CRICTL, SYCRI);
    common::k8s_standins::write_node_tarball(dir, PINNED);
    apt_repo(dir);
}

/// `recipe run RECIPE -i INV ARGS...` (human output).
fn run_human(inv: &Path, recipe: &str, args: &[&str]) -> Output {
    Test::new()
        .args(["run", recipe, "-i"])
        .arg(inv)
        .args(args)
        .timeout(sandbox::RUN_TIMEOUT)
        .run()
}

fn fingerprints(sb: &Sandbox, hosts: &[&str]) -> BTreeMap<String, String> {
    sb.root_fingerprints(hosts)
}

/// Fails if any spelling of `secret` (raw, and the lines of output that may carry it) is in `raw`.
fn assert_absent(raw: &[u8], secret: &str, what: &str, ctx: &str) {
    let s = secret.trim();
    assert!(s.len() >= 16, "{what} is too short to look for: {s:?}");
    assert!(
        !raw.windows(s.len()).any(|w| w == s.as_bytes()),
        "{what} appears in the output of {ctx}"
    );
}

#[test]
fn refusals_before_any_host() {
    // Both hosts point at a loopback port the test listens on: any attempt to connect is
    // queued there, and found after the run (no clock involved).
    let trap = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    trap.set_nonblocking(true).expect("nonblocking");
    let port = trap.local_addr().expect("port").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = dir.path().join("inv.toml");
    std::fs::write(
        &inv,
        format!("[hosts.master]\naddress = \"127.0.0.1\"\nport = {port}\n[hosts.w1]\naddress = \"127.0.0.1\"\nport = {port}\n[groups.workers]\nhosts = [\"w1\"]\n"),
    )
    .expect("write");
    for (vars, want) in [
        (
            vec!["k8s_runtime=sycri", "k8s_version=1.26.0"],
            "kubelet removed in 1.26",
        ),
        (
            vec!["k8s_runtime=sycri", "singularity_flavor=apptainer"],
            "Apptainer",
        ),
        (
            vec!["k8s_runtime=sycri", "singularity_version=3.10.0"],
            "Singularity 3.1.1 to 3.9.x, not 3.10.0",
        ),
        (
            vec!["k8s_runtime=sycri", "singularity_version=3.0.3"],
            "not 3.0.3",
        ),
        (vec!["k8s_runtime=docker"], "k8s_runtime must be"),
        (
            vec!["k8s_install=packages", "k8s_version=1.23.17"],
            "needs k8s_version >= 1.24",
        ),
        (vec!["k8s_version=1.26"], "three numbers"),
        (vec!["k8s_version=v1.26.0"], "three numbers"),
        (
            vec!["k8s_version=1.19.16"],
            "outside what these recipes drive",
        ),
        (
            vec!["k8s_runtime=sycri", "k8s_install=packages"],
            "1.21.14 here",
        ),
    ] {
        let mut args = vec!["--json"];
        for v in &vars {
            args.extend(["--var", v]);
        }
        let r = run_human(&inv, "k8s.rhai", &args);
        let all = r.all();
        // The recipe's `fn validate` refuses them as bad usage (2), before any connection.
        assert_eq!(r.code, 2, "{vars:?}: exit {}\n{all}", r.code);
        assert!(all.contains(want), "{vars:?}: no {want:?} in\n{all}");
        assert!(
            trap.accept().is_err(),
            "{vars:?}: a host was contacted:\n{all}"
        );
        // No step event (--json: every stdout line is one, parsed).
        assert!(r.steps().is_empty(), "{vars:?}: steps ran\n{all}");
    }
}

#[test]
fn cluster_with_standins() {
    require_root();
    let t0 = Instant::now();
    let served = tempfile::tempdir().expect("tempdir");
    served_files(served.path());
    let sb = Sandbox::up("k8s", &["master", "w1", "w2", "w3", "s1", "s2"])
        .serve(Some(served.path()))
        .start();
    log(t0, "sandbox k8s up: master, w1, w2, w3, s1, s2");
    let url = sb.files_url.clone();
    // Every file served is pinned, as a site pins its mirror's (the recipes refuse the rest).
    // The served files are stand-ins, not the release files: pinned with their own checksums
    // here (the recipes' shipped pins would refuse them, as step 3b shows).
    let sum = |rel: String| toml::Value::from(sha256_file(&served.path().join(rel)));
    let node = common::k8s_standins::node_tarball(VERSION);
    let vars: Vec<(&str, toml::Value)> = vec![
        (
            "k8s_node_sha512",
            sha512_file(&served.path().join(&node)).into(),
        ),
        (
            "k8s_crictl_sha256",
            sum(format!("crictl-v{CRICTL}-linux-{}.tar.gz", k8s_arch())),
        ),
        ("k8s_cni_manifest_sha256", sum("kube-flannel.yml".into())),
        ("k8s_install", "binaries".into()),
        ("k8s_version", VERSION.into()),
        (
            "k8s_node_url",
            format!("{url}/v{{version}}/kubernetes-node-linux-{{arch}}.tar.gz").into(),
        ),
        ("k8s_crictl_version", CRICTL.into()),
        (
            "k8s_crictl_url",
            format!("{url}/crictl-v{{version}}-linux-{{arch}}.tar.gz").into(),
        ),
        (
            "k8s_cni_manifest_url",
            format!("{url}/kube-flannel.yml").into(),
        ),
        // These containers cannot set the host's sysctls (k8s_node.rhai notes it): kubeadm's
        // preflight would refuse them, as the real one does; the site ignores those two checks.
        (
            "k8s_ignore_preflight_errors",
            toml::Value::Array(vec![
                "FileContent--proc-sys-net-bridge-bridge-nf-call-iptables".into(),
                "FileContent--proc-sys-net-ipv4-ip_forward".into(),
            ]),
        ),
        // The sample pods run the Slurm sample's SIF packed as an OCI image, in real
        // containerd: that runs in slurm_e2e's Debian 13 lane (containers_on_debian13), where
        // Apptainer and the image exist. These hosts have neither, and no registry to pull from.
        ("k8s_sample", false.into()),
    ];
    sb.write_inventory(&["w1", "w2"], &vars);
    let cluster = ["master", "w1", "w2"];

    // 1. A dry run on fresh hosts changes nothing (the packages path of k8s_node too).
    let before = fingerprints(&sb, &cluster);
    let r = sb.run_ok("k8s.rhai", &["--dry-run", "--diff"]);
    assert!(
        !r.changed().is_empty(),
        "a dry run on fresh hosts reports changes\n{}",
        r.show()
    );
    assert!(
        r.stdout.lines().all(|l| !l.contains("\"dry_run\":false")),
        "a dry-run step ran for real:\n{}",
        r.stdout
    );
    // kubeadm's configuration files are shown before any of it exists.
    let planned = r.changed();
    for (h, f) in [
        ("master", "/etc/kubernetes/recipe-kubeadm.yaml"),
        ("w1", "/etc/kubernetes/recipe-kubeadm-join.yaml"),
    ] {
        assert!(
            planned
                .iter()
                .any(|c| c.starts_with(&format!("{h} ")) && c.ends_with(&format!("template {f}"))),
            "the dry run does not show {f} on {h}:\n  {}",
            planned.join("\n  ")
        );
    }
    sb.run_ok(
        "k8s_node.rhai",
        &[
            "--group",
            "all",
            "--dry-run",
            "--var",
            "k8s_install=packages",
        ],
    );
    assert_eq!(
        before,
        fingerprints(&sb, &cluster),
        "a dry run changed a host"
    );
    log(t0, "dry runs on fresh hosts: nothing changed");

    // 2. The cluster: containerd for real, Kubernetes as stand-ins.
    let r = sb.run_ok("k8s.rhai", &["--diff", "-vv"]);
    log(
        t0,
        &format!("k8s.rhai: {} steps changed", r.changed().len()),
    );
    assert_eq!(
        r.play_order(),
        [
            "k8s_node.rhai",
            "k8s_master.rhai",
            "k8s_token.rhai",
            "k8s_worker.rhai",
            "k8s_token.rhai",
            "k8s_cni.rhai",
            "k8s_check.rhai"
        ],
        "plays out of order\n{}",
        r.show()
    );
    for h in cluster {
        // Real: containerd, its configuration, the CNI plugins from Debian.
        sb.ssh_ok(h, "ctr --address /run/containerd/containerd.sock version");
        sb.ssh_ok(h, "grep -q 'SystemdCgroup = true' /etc/containerd/config.toml && systemctl is-active containerd");
        sb.ssh_ok(h, "[ \"$(readlink /opt/cni/bin/bridge)\" = /usr/lib/cni/bridge ] && CNI_COMMAND=VERSION /opt/cni/bin/bridge </dev/null | grep -q cniVersion");
        // What kubeadm's preflight requires is installed; the KubeletConfiguration of
        // init's configuration file reached every node (cgroup driver = containerd's).
        sb.ssh_ok(
            h,
            "command -v conntrack && command -v socat && command -v ethtool && command -v iptables",
        );
        sb.ssh_ok(
            h,
            "grep -qx 'cgroupDriver: systemd' /var/lib/kubelet/config.yaml",
        );
        sb.ssh_ok(h, "grep -qx 'net.ipv4.ip_forward = 1' /etc/sysctl.d/99-kubernetes.conf && grep -qx br_netfilter /etc/modules-load.d/k8s.conf");
        sb.ssh_ok(h, "grep -q unix:///run/containerd/containerd.sock /etc/crictl.yaml && crictl version | grep -q containerd");
        sb.ssh_ok(
            h,
            "systemctl is-active kubelet && systemctl is-enabled kubelet",
        );
        // No join secret left behind.
        sb.ssh_ok(h, "! test -e /etc/kubernetes/recipe-join/token && ! test -e /etc/kubernetes/recipe-join/ca-hash");
        // The pod network is kubeadm's CIDR, not the manifest's.
        sb.ssh_ok(
            h,
            "grep -qx FLANNEL_NETWORK=10.244.0.0/16 /run/flannel/subnet.env",
        );
    }
    // Addresses: kubelet's node IP, the API server's advertise address and flannel's
    // interface follow the address each host name resolves to (Slurm's), not the default route.
    for h in cluster {
        let ip = &sb.addrs[h];
        sb.ssh_ok(
            h,
            &format!("grep -q -- '--node-ip={ip}' /etc/default/kubelet"),
        );
    }
    let mip = &sb.addrs["master"];
    sb.ssh_ok(
        "master",
        &format!("grep -qx '  advertiseAddress: \"{mip}\"' /etc/kubernetes/recipe-kubeadm.yaml"),
    );
    sb.ssh_ok("master", &format!("grep -qx -- '        - --iface-can-reach={mip}' /etc/kubernetes/recipe-cni/cni.yaml && ! grep -q -- '--iface=eth0' /etc/kubernetes/recipe-cni/cni.yaml"));
    // Workers joined from a JoinConfiguration whose token and hash stayed placeholders on
    // disk; the filled-in copy is gone.
    for w in ["w1", "w2"] {
        sb.ssh_ok(w, "grep -qx 'kind: JoinConfiguration' /etc/kubernetes/recipe-kubeadm-join.yaml && grep -q '@TOKEN@' /etc/kubernetes/recipe-kubeadm-join.yaml && grep -qx 'apiVersion: kubeadm.k8s.io/v1beta3' /etc/kubernetes/recipe-kubeadm-join.yaml && ! test -e /etc/kubernetes/recipe-join/join.yaml");
    }
    let nodes = sb.ssh_ok(
        "master",
        "kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes --no-headers",
    );
    log(t0, &format!("stand-in kubectl get nodes:\n{nodes}"));
    for n in cluster {
        assert!(
            nodes
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([n, "Ready"])),
            "{n} not Ready:\n{nodes}"
        );
    }
    let joined = sb.ssh_ok("master", "cat /var/lib/kube-standin/apiserver/joined");
    assert!(joined.contains("w1 ") && joined.contains("w2 "), "{joined}");
    // The token(s) the run made, and the CA hash: in no output (-vv, --diff, --json).
    let tokens = sb.ssh_ok("master", "cat /var/lib/kube-standin/token-history");
    let live = sb.ssh_ok(
        "master",
        "cut -d' ' -f3- /var/lib/kube-standin/apiserver/tokens",
    );
    assert!(
        !live.contains("recipe") && !live.contains("default bootstrap token"),
        "a bootstrap token (join or kubeadm init's) was not revoked: {live}"
    );
    let hash = sb.ssh_ok("master", "openssl x509 -pubkey -in /etc/kubernetes/pki/ca.crt | openssl rsa -pubin -outform der 2>/dev/null | openssl dgst -sha256 -hex | sed 's/^.* //'");
    for t in tokens.lines() {
        assert_absent(
            &r.all_bytes(),
            t,
            "a join token",
            "k8s.rhai -vv --diff --json",
        );
    }
    assert_absent(
        &r.all_bytes(),
        &hash,
        "the CA hash",
        "k8s.rhai -vv --diff --json",
    );
    log(
        t0,
        &format!(
            "{} tokens and the CA hash: in no output",
            tokens.lines().count()
        ),
    );

    // The check's own output (notes are printed in human mode only).
    let c = run_human(&sb.inv, "k8s_check.rhai", &["--host", "master"]).expect_success();
    for w in ["w1", "w2"] {
        assert!(
            c.stdout.contains(&format!("{w} ")) && c.stdout.contains("Ready"),
            "{}",
            c.show()
        );
    }
    log(t0, &format!("k8s_check.rhai:\n{}", c.stdout));

    // 3. Second run: nothing changes.
    let r = sb.run_ok("k8s.rhai", &[]);
    assert_unchanged(&r, "second k8s.rhai");
    log(t0, "second run: 0 changed");

    // cluster.rhai with kubernetes = true plays the same Kubernetes recipes: on this cluster
    // they find nothing to change. (Its Slurm half is only planned here: a dry run.)
    let r = sb.run_ok(
        "cluster.rhai",
        &[
            "--dry-run",
            "--var",
            "kubernetes=true",
            "--var",
            "check=false",
            "--var",
            "slurm_install=packages",
        ],
    );
    let changed = r.changed();
    let k8s_changed: Vec<&String> = changed
        .iter()
        .filter(|c| c.contains(" k8s_") || c.contains(" sycri"))
        .collect();
    assert!(
        k8s_changed.is_empty(),
        "cluster.rhai's Kubernetes half would change: {k8s_changed:#?}\n{}",
        r.show()
    );
    assert!(
        r.stderr.contains("play k8s_node.rhai") && r.stderr.contains("play k8s_cni.rhai"),
        "cluster.rhai did not play the Kubernetes recipes:\n{}",
        r.show()
    );
    log(
        t0,
        "cluster.rhai --var kubernetes=true: its Kubernetes half changes nothing",
    );

    // 3b. The shipped pin, on w3 (not in the cluster yet): Kubernetes 1.21.14 (the sycri
    // default) as binaries with no site pin (k8s_node_sha512 ""), from the file server, which
    // serves a stand-in at that path. The recipes' pin is the real release's sha512: the
    // stand-in is refused with both checksums and the variable, before anything is unpacked
    // or installed (no tarball, no kubeadm, kubelet or kubectl, no temporary file left).
    let stand_in = sha512_file(
        &served
            .path()
            .join(common::k8s_standins::node_tarball(PINNED)),
    );
    let r = sb.run(
        "k8s_node.rhai",
        &[
            "--host",
            "w3",
            "--var",
            &format!("k8s_version={PINNED}"),
            "--var",
            "k8s_node_sha512=",
        ],
    );
    let all = r.all();
    for want in [
        "checksum mismatch",
        &format!("has sha512 {stand_in}"),
        &format!("expected {}", pinned_sha512()),
        "set k8s_node_sha512 to its sha512",
    ] {
        assert!(
            r.code != 0 && all.contains(want),
            "no {want:?} in\n{}",
            r.show()
        );
    }
    let left = sb.ssh_ok(
        "w3",
        "ls -A /usr/local/src; for b in kubeadm kubelet kubectl; do ls /usr/local/bin/$b 2>/dev/null; done; true",
    );
    assert!(
        left.trim().is_empty(),
        "left on w3 after the refusal: {left}"
    );
    log(
        t0,
        "w3: 1.21.14's stand-in node tarball refused by the shipped sha512, nothing unpacked",
    );

    // 4. w3 joins when added to the inventory.
    sb.write_inventory(&["w1", "w2", "w3"], &vars);
    let r = sb.run_ok("k8s.rhai", &["-vv"]);
    log(
        t0,
        &format!("k8s.rhai with w3: {} steps changed", r.changed().len()),
    );
    let changed = r.changed();
    assert!(
        changed.iter().any(|c| c.starts_with("w3 k8s_worker.rhai")),
        "{}",
        r.show()
    );
    assert!(
        !changed
            .iter()
            .any(|c| c.starts_with("w1 ") || c.starts_with("w2 ")),
        "w1/w2 changed:\n  {}",
        changed.join("\n  ")
    );
    let nodes = sb.ssh_ok(
        "master",
        "kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes --no-headers",
    );
    assert!(
        nodes
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["w3", "Ready"])),
        "{nodes}"
    );
    for t in sb
        .ssh_ok("master", "cat /var/lib/kube-standin/token-history")
        .lines()
    {
        assert_absent(
            &r.all_bytes(),
            t,
            "a join token",
            "k8s.rhai (w3) -vv --json",
        );
    }
    let r = sb.run_ok("k8s.rhai", &[]);
    assert_unchanged(&r, "k8s.rhai after w3 joined");
    log(t0, "w3 joined; the next run: 0 changed");

    // 5. sycri on s1: refused combinations, then a build from the (stand-in) source.
    let sycri_vars: Vec<String> = vec![
        format!("sycri_url={url}/singularity-cri-{{version}}.tar.gz"),
        format!(
            "sycri_sha256={}",
            sha256_file(
                &served
                    .path()
                    .join(format!("singularity-cri-{SYCRI}.tar.gz"))
            )
        ),
        "sycri_build_packages=[\"make\"]".into(),
        "sycri_go_packages=[]".into(),
    ];
    // The cluster above runs 1.28 (containerd); sycri serves 1.25 at most: its default.
    let mut args: Vec<&str> = vec!["--host", "s1", "--var", "k8s_version="];
    for v in &sycri_vars {
        args.extend(["--var", v]);
    }
    // On a cgroup v2 host sycri is refused, with what to change; installing anyway is a
    // site's explicit choice (here: to test the install). The sandbox hosts share this
    // machine's cgroup layout: on a cgroup v1 machine the refusal cannot be seen here.
    if sb
        .ssh("s1", "test -e /sys/fs/cgroup/cgroup.controllers")
        .status
        .success()
    {
        let r = sb.run("sycri.rhai", &args);
        assert!(
            r.code != 0
                && r.all().contains("sycri needs cgroup v1")
                && r.all().contains("systemd.unified_cgroup_hierarchy=0"),
            "sycri on cgroup v2 was not refused\n{}",
            r.show()
        );
        args.extend(["--var", "sycri_accept_cgroup_v2=true"]);
        log(t0, "sycri.rhai on cgroup v2: refused, with what to change");
    } else {
        log(
            t0,
            "s1 runs cgroup v1 (as this machine): sycri's cgroup v2 refusal is NOT exercised here",
        );
    }
    for (bad, want) in [
        ("k8s_version=1.27.3", "kubelet removed in 1.26"),
        ("singularity_flavor=apptainer", "Apptainer"),
        ("singularity_version=3.11.4", "not 3.11.4"),
    ] {
        let mut a = args.clone();
        a.extend(["--var", bad]);
        let r = sb.run("sycri.rhai", &a);
        assert!(
            r.code == 2 && r.steps().is_empty(),
            "{bad}: ran steps\n{}",
            r.show()
        );
        assert!(
            r.stderr.contains(want) || r.stdout.contains(want),
            "{bad}: no {want:?}\n{}",
            r.show()
        );
    }
    // Singularity itself is singularity.rhai's job: a stand-in answers --version here.
    let sing = std::fs::read_to_string(project().join("tests/standins/singularity")).expect("read");
    sb.ssh_ok("s1", &format!("cat > /usr/local/bin/singularity <<'EOF'\n{sing}EOF\nchmod 0755 /usr/local/bin/singularity"));
    let r = sb.run_ok("sycri.rhai", &args);
    log(
        t0,
        &format!("sycri.rhai: {} steps changed", r.changed().len()),
    );
    sb.ssh_ok("s1", "systemctl is-active sycri && systemctl is-enabled sycri && test -S /var/run/singularity.sock");
    sb.ssh_ok("s1", "curl -sS --http2-prior-knowledge --unix-socket /var/run/singularity.sock -o /dev/null http://localhost/");
    sb.ssh_ok(
        "s1",
        "grep -qx 'streamingURL: 127.0.0.1:12345' /usr/local/etc/sycri/sycri.yaml",
    );
    let pid = sb.ssh_ok("s1", "systemctl show -p MainPID --value sycri");
    let r = sb.run_ok("sycri.rhai", &args);
    assert_unchanged(&r, "second sycri.rhai");
    assert_eq!(
        pid,
        sb.ssh_ok("s1", "systemctl show -p MainPID --value sycri"),
        "sycri restarted without a change"
    );
    let mut a = args.clone();
    a.extend(["--var", "sycri_streaming_url=127.0.0.1:12346"]);
    let r = sb.run_ok("sycri.rhai", &a);
    assert!(
        r.changed().iter().any(|c| c.contains("sycri.yaml")),
        "{}",
        r.show()
    );
    assert_ne!(
        pid,
        sb.ssh_ok("s1", "systemctl show -p MainPID --value sycri"),
        "sycri not restarted after its config changed"
    );
    log(
        t0,
        "sycri.rhai: built, answering, 0 changed on re-run, restarted on a config change",
    );

    // 6. The stand-ins are strict: from s1 (its CRI socket is sycri's) against the master.
    for name in ["kubeadm", "kubelet"] {
        let body = String::from_utf8(standin(name, VERSION)).expect("text");
        sb.ssh_ok(
            "s1",
            &format!(
                "cat > /tmp/{name} <<'EOF_STANDIN'\n{body}\nEOF_STANDIN\nchmod 0755 /tmp/{name}"
            ),
        );
    }
    let sock = "--cri-socket=unix:///var/run/singularity.sock";
    let zero = "0".repeat(64);
    // s1 is not prepared for Kubernetes (no conntrack, no kubelet): preflight fails with
    // kubeadm's check names, and ignoring them by those names gets past it.
    let o = sb.ssh("s1", &format!("/tmp/kubeadm join master:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:{} {sock}", hash.trim()));
    let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        !o.status.success()
            && all.contains("[ERROR FileExisting-conntrack]: conntrack not found in system path")
            && all.contains("[ERROR FileExisting-kubelet]"),
        "preflight did not fail on s1:\n{all}"
    );
    let ign = "--ignore-preflight-errors=all";
    // A valid token: discovery passes its JWS check, the CA pin is then what fails.
    let valid = sb.ssh_ok(
        "master",
        "/usr/local/bin/kubeadm token create --ttl 10m --description k8s_e2e",
    );
    let valid = valid.trim();
    for (args, want) in [
        (format!("--token {valid} --discovery-token-ca-cert-hash sha256:{zero} {sock} {ign}"), "none of the public keys"),
        (format!("--discovery-token-ca-cert-hash sha256:{} {sock} {ign}", hash.trim()), "bootstrapToken or file must be set"),
        (format!("--token abcdef.0123456789abcdef {sock} {ign}"), "without caCertHashes"),
        (format!("--token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:{} {sock} {ign}", hash.trim()), "could not find a JWS signature in the cluster-info ConfigMap for token ID \"abcdef\""),
        (format!("--token abcdef.0123456789abcdef --bogus {sock}"), "unknown flag: --bogus"),
        (format!("--config /dev/null --token abcdef.0123456789abcdef {sock}"), "can not mix '--config' with arguments [cri-socket token]"),
        (format!("--token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:{} {sock} --ignore-preflight-errors=all,Swap", hash.trim()), "don't specify individual checks if 'all' is used"),
    ] {
        let o = sb.ssh("s1", &format!("/tmp/kubeadm join master:6443 {args}"));
        let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
        assert!(!o.status.success() && all.contains(want), "kubeadm join {args}: want {want:?}, got:\n{all}");
    }
    // Configuration files as kubeadm reads them: the API version of the release, the kind
    // the command needs, unknown fields warned.
    let cfg = |api: &str, kind: &str, extra: &str| {
        format!("apiVersion: {api}\nkind: {kind}\ndiscovery:\n  bootstrapToken:\n    apiServerEndpoint: master:6443\n    token: abcdef.0123456789abcdef\n    caCertHashes:\n    - sha256:{zero}\n{extra}")
    };
    for (file, body, cmd, want) in [
        ("v1beta4.yaml", cfg("kubeadm.k8s.io/v1beta4", "JoinConfiguration", ""), "join", "no kind \"JoinConfiguration\" is registered for version \"kubeadm.k8s.io/v1beta4\""),
        ("v1beta2.yaml", cfg("kubeadm.k8s.io/v1beta2", "JoinConfiguration", ""), "join", "uses an old API spec: \"kubeadm.k8s.io/v1beta2\""),
        ("init.yaml", cfg("kubeadm.k8s.io/v1beta3", "InitConfiguration", ""), "join", "no JoinConfiguration found in the supplied config"),
        ("unknown.yaml", cfg("kubeadm.k8s.io/v1beta3", "JoinConfiguration", "nodeRegistration:\n  criSocket: unix:///var/run/singularity.sock\n  nodeIP: 10.0.0.1\n"), "join", "strict decoding error: unknown field \"nodeRegistration.nodeIP\""),
    ] {
        let o = sb.ssh("s1", &format!("cat > /tmp/{file} <<'EOF'\n{body}EOF\n/tmp/kubeadm {cmd} --config /tmp/{file} --ignore-preflight-errors=all"));
        let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
        assert!(!o.status.success() && all.contains(want), "kubeadm {cmd} --config {file}: want {want:?}, got:\n{all}");
    }
    sb.ssh_ok(
        "master",
        &format!("/usr/local/bin/kubeadm token delete {}", &valid[..6]),
    );
    // None of these failures left a file behind (kubeadm fails in discovery or preflight).
    sb.ssh_ok("s1", "! test -e /etc/kubernetes/kubelet.conf && ! test -e /etc/kubernetes/pki/ca.crt && ! test -e /etc/kubernetes/bootstrap-kubelet.conf");
    // A flag kubelet removed in 1.24 (and --container-runtime, gone in 1.27) fails as pflag does.
    for f in ["--network-plugin=cni", "--container-runtime=remote"] {
        let o = sb.ssh("s1", &format!("/tmp/kubelet {f}"));
        let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
        let name = f.split('=').next().unwrap_or(f);
        assert!(
            !o.status.success() && all.contains(&format!("unknown flag: {name}")),
            "kubelet {VERSION} {f}: {all}"
        );
    }
    log(t0, "stand-ins: preflight names, wrong hash, missing token or hash, unknown token, unknown and removed flags, --config mixing refused");

    // 7. Containerd too old for the version asked: refused on the host, before it changes.
    let r = sb.run(
        "k8s_node.rhai",
        &[
            "--host",
            "master",
            "--dry-run",
            "--var",
            "k8s_version=1.35.9",
        ],
    );
    assert!(
        r.code != 0
            && r.all().contains("is too old for Kubernetes 1.35.9")
            && r.changed().is_empty(),
        "containerd 1.6 was not refused for 1.35.9\n{}",
        r.show()
    );

    // 8. A half-done init (kubeadm stopped after its certificates and manifests, before
    // admin.conf): k8s_master.rhai says so and stops; with k8s_reset=true it resets and inits.
    sb.ssh_ok("master", "rm -f /etc/kubernetes/admin.conf");
    let r = sb.run("k8s_master.rhai", &["--host", "master"]);
    assert!(
        r.code != 0
            && r.all().contains("kubeadm init did not finish")
            && r.all().contains("k8s_reset=true"),
        "a half-done init was not reported\n{}",
        r.show()
    );
    assert!(
        !r.changed().iter().any(|c| c.contains("kubeadm")),
        "kubeadm ran without k8s_reset\n{}",
        r.show()
    );
    let r = sb.run_ok(
        "k8s_master.rhai",
        &["--host", "master", "--var", "k8s_reset=true"],
    );
    assert!(
        r.changed().iter().any(|c| c.contains("kubeadm reset"))
            && r.changed().iter().any(|c| c.contains("kubeadm init")),
        "{}",
        r.show()
    );
    sb.ssh_ok(
        "master",
        "kubectl --kubeconfig /etc/kubernetes/admin.conf get --raw=/healthz",
    );
    let r = sb.run_ok("k8s_master.rhai", &["--host", "master"]);
    assert_unchanged(&r, "k8s_master.rhai after the reset");
    log(t0, "half-done init: reported, then reset and initialised with k8s_reset=true; next run 0 changed");

    // 9. The other runtime and the other install mode: a cluster of s1 (master) and s2
    // with sycri, Kubernetes 1.25 from the local stand-in of pkgs.k8s.io, twice.
    sb.ssh_ok("s2", &format!("cat > /usr/local/bin/singularity <<'EOF'\n{sing}EOF\nchmod 0755 /usr/local/bin/singularity"));
    let mut pvars: Vec<(&str, toml::Value)> = vec![
        ("master", "s1".into()),
        ("k8s_runtime", "sycri".into()),
        ("k8s_install", "packages".into()),
        ("k8s_version", PKG_VERSION.into()),
        (
            "k8s_repo_url",
            format!("{url}/k8s-apt/{{minor}}/deb/").into(),
        ),
        (
            "k8s_repo_key_fingerprint",
            std::fs::read_to_string(served.path().join("k8s-apt/fingerprint"))
                .expect("fingerprint")
                .into(),
        ),
        (
            "sycri_url",
            format!("{url}/singularity-cri-{{version}}.tar.gz").into(),
        ),
        (
            "sycri_sha256",
            sha256_file(
                &served
                    .path()
                    .join(format!("singularity-cri-{SYCRI}.tar.gz")),
            )
            .into(),
        ),
        (
            "sycri_build_packages",
            toml::Value::Array(vec!["make".into()]),
        ),
        ("sycri_go_packages", toml::Value::Array(vec![])),
        // sycri's sample pod runs the Slurm sample's SIF with the host's real Apptainer: that
        // runs in slurm_e2e's Debian 13 lane (containers_on_debian13), where Apptainer and the
        // image exist. These Debian 12 hosts have neither (a --version stand-in only).
        ("k8s_sample", false.into()),
    ];
    if sb
        .ssh("s1", "test -e /sys/fs/cgroup/cgroup.controllers")
        .status
        .success()
    {
        pvars.push(("sycri_accept_cgroup_v2", true.into()));
    }
    for (k, v) in &vars {
        if ![
            "k8s_install",
            "k8s_version",
            "k8s_node_url",
            "k8s_crictl_version",
            "k8s_crictl_url",
            "k8s_sample",
        ]
        .contains(k)
        {
            pvars.push((k, v.clone()));
        }
    }
    sb.write_inventory(&["s2"], &pvars);
    let pcluster = ["s1", "s2"];
    let r = sb.run_ok("k8s.rhai", &["--diff"]);
    log(
        t0,
        &format!(
            "k8s.rhai (sycri, packages {PKG_VERSION}): {} steps changed",
            r.changed().len()
        ),
    );
    assert_eq!(r.play_order()[0], "sycri.rhai", "{}", r.show());
    for h in pcluster {
        // The packages from the repository, pinned; /opt/cni/bin is kubernetes-cni's, unlinked.
        sb.ssh_ok(h, &format!("for p in kubeadm kubelet kubectl; do dpkg-query -W -f '${{Version}}\\n' $p | grep -qx '{PKG_VERSION}-1.1' || exit 1; done"));
        sb.ssh_ok(h, "dpkg-query -W cri-tools kubernetes-cni && dpkg -S /opt/cni/bin/bridge | grep -q '^kubernetes-cni:' && ! test -L /opt/cni/bin/bridge");
        sb.ssh_ok(h, "apt-cache policy kubelet | grep -q '1001' && test -s /etc/apt/keyrings/kubernetes-apt-keyring.gpg");
        sb.ssh_ok(h, "grep -qx 'cgroupDriver: cgroupfs' /var/lib/kubelet/config.yaml && grep -q -- '--container-runtime=remote' /etc/default/kubelet && grep -q -- '--image-service-endpoint=unix:///var/run/singularity.sock' /etc/default/kubelet");
        sb.ssh_ok(h, "systemctl is-active sycri kubelet");
    }
    let nodes = sb.ssh_ok(
        "s1",
        "kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes --no-headers",
    );
    for n in pcluster {
        assert!(
            nodes
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([n, "Ready"])),
            "{n} not Ready:\n{nodes}"
        );
    }
    let r = sb.run_ok("k8s.rhai", &[]);
    assert_unchanged(&r, "second k8s.rhai (sycri, packages)");
    // A flag this kubeadm does not have yet (reset --dry-run came in 1.26): cobra's error,
    // and nothing is reset.
    let o = sb.ssh("s2", "/usr/bin/kubeadm reset -f --dry-run");
    assert!(
        !o.status.success() && text(&o.stderr).contains("unknown flag: --dry-run"),
        "kubeadm {PKG_VERSION} reset --dry-run: {}",
        text(&o.stderr)
    );
    sb.ssh_ok("s2", "test -e /etc/kubernetes/kubelet.conf");
    log(
        t0,
        "sycri + packages cluster: s1 and s2 Ready, second run 0 changed",
    );
    log(t0, "done");
}
