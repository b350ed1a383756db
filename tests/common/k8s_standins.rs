//! The Kubernetes stand-ins (tests/standins/) laid out as the release downloads a site
//! would serve, for the sandbox file server: the release's node tarball holding kubeadm,
//! kubelet, kubectl (each rewritten to model the version it is served as) where upstream's
//! holds them (kubernetes/node/bin/), a crictl tarball, the Singularity-CRI source tarball
//! and a flannel-like manifest. These are not the release files: the tests pin them with
//! their own checksums (the recipes' shipped pins are the real files', and refuse these).

use super::{project, sha256_file};
use std::path::Path;
use std::process::Command;

/// Kubernetes' name for this machine's architecture.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => panic!("no stand-in layout for {a}"),
    }
}

fn tar(args: &[&str], what: &str) {
    let st = Command::new("tar").args(args).status().expect("tar");
    assert!(st.success(), "tar of {what} failed");
}

/// A stand-in as served for `version` (it models that version); kubeadm carries the API
/// server stand-in as its tail.
pub fn standin(name: &str, version: &str) -> Vec<u8> {
    let s = project().join("tests/standins");
    let mut body = std::fs::read_to_string(s.join(name))
        .expect("stand-in")
        .replacen("\nV=v1.25.16\n", &format!("\nV=v{version}\n"), 1)
        .into_bytes();
    if name == "kubeadm" {
        body.extend_from_slice(b"\n__APISERVER__\n");
        body.extend(std::fs::read(s.join("kube-apiserver.pl")).expect("apiserver"));
    }
    body
}

/// Where the node tarball of `version` is served, under the file server's root (as
/// dl.k8s.io lays it out: v<version>/kubernetes-node-linux-<arch>.tar.gz).
pub fn node_tarball(version: &str) -> String {
    format!("v{version}/kubernetes-node-linux-{}.tar.gz", arch())
}

/// Writes the node tarball of `version` into `dir` (see node_tarball()): kubernetes/node/bin/
/// with the stand-ins of kubeadm, kubelet and kubectl, owned by root as upstream packs it
/// (build/lib/release.sh: `tar czf ... kubernetes --owner=0 --group=0`).
pub fn write_node_tarball(dir: &Path, version: &str) {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().expect("tempdir");
    let bin = t.path().join("kubernetes/node/bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    for name in ["kubeadm", "kubelet", "kubectl"] {
        let p = bin.join(name);
        std::fs::write(&p, standin(name, version)).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let out = dir.join(node_tarball(version));
    std::fs::create_dir_all(out.parent().expect("parent")).expect("mkdir");
    tar(
        &[
            "-czf",
            &out.to_string_lossy(),
            "-C",
            &t.path().to_string_lossy(),
            "--owner=0",
            "--group=0",
            "kubernetes",
        ],
        "the node tarball",
    );
}

/// Writes the layout into `dir`: the node tarball of `version` (node_tarball()),
/// crictl-v<crictl>-..., singularity-cri-<sycri>.tar.gz, kube-flannel.yml (its network NOT
/// the pod CIDR).
pub fn serve(dir: &Path, version: &str, crictl: &str, sycri: &str) {
    let s = project().join("tests/standins");
    write_node_tarball(dir, version);
    let crictl_tgz = dir.join(format!("crictl-v{crictl}-linux-{}.tar.gz", arch()));
    tar(
        &[
            "-czf",
            &crictl_tgz.to_string_lossy(),
            "-C",
            &s.to_string_lossy(),
            "crictl",
        ],
        "crictl",
    );
    std::fs::write(
        dir.join(format!("crictl-v{crictl}-linux-{}.tar.gz.sha256", arch())),
        format!("{}  crictl.tar.gz\n", sha256_file(&crictl_tgz)),
    )
    .expect("write");
    let top = format!("singularity-cri-{sycri}");
    tar(
        &[
            "-czf",
            &dir.join(format!("{top}.tar.gz")).to_string_lossy(),
            "-C",
            &s.join("sycri-src").to_string_lossy(),
            &format!("--transform=s,^\\.,{top},"),
            ".",
        ],
        "the sycri source",
    );
    std::fs::write(
        dir.join("kube-flannel.yml"),
        "---\nkind: Namespace\napiVersion: v1\nmetadata:\n  name: kube-flannel\n---\nkind: ConfigMap\napiVersion: v1\nmetadata:\n  name: kube-flannel-cfg\n  namespace: kube-flannel\ndata:\n  net-conf.json: |\n    {\n      \"Network\": \"10.99.0.0/16\",\n      \"Backend\": {\n        \"Type\": \"vxlan\"\n      }\n    }\n---\nkind: DaemonSet\napiVersion: apps/v1\nmetadata:\n  name: kube-flannel-ds\n  namespace: kube-flannel\nspec:\n  template:\n    spec:\n      containers:\n      - name: kube-flannel\n        image: docker.io/flannel/flannel:v0.22.3\n        command:\n        - /opt/bin/flanneld\n        args:\n        - --ip-masq\n        - --kube-subnet-mgr\n        - --iface=eth0\n",
    )
    .expect("write");
}
