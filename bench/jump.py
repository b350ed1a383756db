#!/usr/bin/env python3
"""Hosts behind one jump host: recipe against `ssh -J` per host, with and without ControlMaster.

N node sshds listen on the loopback of a Linux network namespace that this machine cannot
enter; one bastion sshd (OpenSSH defaults, so MaxStartups 10:30:100) listens on the
namespace's one link. Everything reaches the nodes through the bastion:

- recipe: one step (`sh`) on every node, `jump = "bastion"` in the inventory (one shared
  connection to the bastion, a direct-tcpip channel per node);
- floor, plain `ssh -J`: N `ssh -J bastion NODE true` started at once, each with its own
  connection to the bastion (what a script looping over the nodes does); past MaxStartups the
  bastion turns some away, counted as failures;
- floor, ControlMaster: the same with the bastion hop multiplexed on one master connection
  (`ControlMaster auto`, `ControlPersist`), opened before the clock starts.

Then the throughput of streamed host-to-host copies through the bastion: node01 holds a
file of SIZE MiB, recipe copies it to K other nodes (`file(dest, #{from_host, src})`, all
through the one bastion connection), against K `ssh -J bastion node01 cat | ssh -J bastion
nodeK 'cat > dest'` pipes (separate bastion connections each).

    sudo python3 bench/jump.py [--nodes 20] [--reps 3] [--copy-mib 64] [--copies 4]

Needs root (ip netns), OpenSSH (ssh, sshd, ssh-keygen), and the release build of recipe
(`cargo build --release`, or RECIPE_BIN=path). Everything runs on this one machine: the
controller, the bastion, the nodes and the copies share its cores, so compare medians and
ratios, not absolute times. Writes bench/results/jump.json and prints a Markdown table.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 22022
NS = f"rcpbench-{os.getpid()}"
LINK = f"rcb{os.getpid() % 100000}"
NEAR, FAR = "10.238.0.1", "10.238.0.2"


def sh(argv, check=True, **kw):
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)


def in_ns(argv, **kw):
    return sh(["ip", "netns", "exec", NS] + argv, **kw)


def keygen(path):
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path])


class Site:
    """The namespace, its link, the bastion and the nodes."""

    def __init__(self, n, d):
        self.d, self.n, self.procs = d, n, []
        sh(["ip", "netns", "add", NS])
        in_ns(["ip", "link", "set", "lo", "up"])
        sh(["ip", "link", "add", LINK, "type", "veth", "peer", "name", "far0", "netns", NS])
        sh(["ip", "addr", "add", f"{NEAR}/30", "dev", LINK])
        sh(["ip", "link", "set", LINK, "up"])
        in_ns(["ip", "addr", "add", f"{FAR}/30", "dev", "far0"])
        in_ns(["ip", "link", "set", "far0", "up"])
        self.key = os.path.join(d, "client_key")
        keygen(self.key)
        self.kh = os.path.join(d, "known_hosts")
        lines = [self.sshd("bastion", FAR, "LogLevel INFO")]
        for i in range(1, n + 1):
            lines.append(self.sshd(f"node{i:02}", self.addr(i), "LogLevel ERROR"))
        with open(self.kh, "w") as f:
            f.writelines(lines)

    @staticmethod
    def addr(i):
        return f"127.0.1.{i}"

    def sshd(self, name, addr, extra):
        d = os.path.join(self.d, name)
        os.makedirs(d)
        keygen(os.path.join(d, "host_key"))
        shutil.copy(self.key + ".pub", os.path.join(d, "authorized_keys"))
        os.makedirs("/run/sshd", exist_ok=True)
        cfg = os.path.join(d, "sshd_config")
        with open(cfg, "w") as f:
            f.write(
                f"Port {PORT}\nListenAddress {addr}\nHostKey {d}/host_key\n"
                f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                f"StrictModes no\nPidFile {d}/sshd.pid\n{extra}\n"
            )
        log = open(os.path.join(d, "sshd.log"), "w")
        self.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", NS, "/usr/sbin/sshd", "-D", "-e", "-f", cfg],
            stdout=subprocess.DEVNULL, stderr=log))
        deadline = time.time() + 10
        while not in_ns(["ss", "-Hltn", "src", f"{addr}:{PORT}"]).stdout.strip():
            if time.time() > deadline:
                sys.exit(f"sshd {name} did not listen")
            time.sleep(0.05)
        with open(os.path.join(d, "host_key.pub")) as f:
            t, k = f.read().split()[:2]
        return f"[{addr}]:{PORT} {t} {k}\n"

    def bastion_logins(self):
        with open(os.path.join(self.d, "bastion", "sshd.log")) as f:
            return f.read().count("Accepted publickey for")

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()
        pids = sh(["ip", "netns", "pids", NS], check=False).stdout.split()
        for p in pids:
            try:
                os.kill(int(p), 9)
            except (ProcessLookupError, ValueError):
                pass
        sh(["ip", "link", "del", LINK], check=False)
        sh(["ip", "netns", "del", NS], check=False)


def inventory(site, path, out_dir):
    with open(path, "w") as f:
        f.write(f'known_hosts = "{site.kh}"\n\n[hosts.bastion]\naddress = "{FAR}"\nport = {PORT}\n'
                f'user = "root"\nkey = "{site.key}"\n')
        for i in range(1, site.n + 1):
            f.write(f'\n[hosts.node{i:02}]\naddress = "{site.addr(i)}"\nport = {PORT}\nuser = "root"\n'
                    f'key = "{site.key}"\njump = "bastion"\nvars = {{ out = "{out_dir}/node{i:02}" }}\n')
        names = ", ".join(f'"node{i:02}"' for i in range(1, site.n + 1))
        f.write(f"\n[groups.nodes]\nhosts = [{names}]\n")


def ssh_config(site, path, control):
    with open(path, "w") as f:
        f.write(f"Host bastion\n  HostName {FAR}\n  Port {PORT}\n  User root\n  IdentityFile {site.key}\n"
                f"  UserKnownHostsFile {site.kh}\n  StrictHostKeyChecking yes\n  IdentitiesOnly yes\n"
                f"  ConnectionAttempts 1\n")
        if control:
            f.write(f"  ControlMaster auto\n  ControlPath {site.d}/cm-%C\n  ControlPersist 120\n")
        f.write(f"Host 127.0.1.*\n  Port {PORT}\n  User root\n  IdentityFile {site.key}\n"
                f"  UserKnownHostsFile {site.kh}\n  StrictHostKeyChecking yes\n  IdentitiesOnly yes\n"
                "  ProxyJump bastion\n  ConnectionAttempts 1\n")


def timed(fn):
    t = time.monotonic()
    res = fn()
    return time.monotonic() - t, res


def run_recipe(binary, inv, recipe):
    p = subprocess.run([binary, "run", recipe, "-i", inv, "--group", "nodes", "--json"],
                       capture_output=True, text=True)
    recaps = [json.loads(l) for l in p.stdout.splitlines() if '"event":"recap"' in l]
    return sum(1 for r in recaps if r["failed"] or r["unreachable"])


def run_ssh_all(cfg, site, cmd_for=None):
    procs = []
    for i in range(1, site.n + 1):
        procs.append(subprocess.Popen(["ssh", "-F", cfg, site.addr(i), "true"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return sum(1 for p in procs if p.wait() != 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--copy-mib", type=int, default=64)
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--results", default=os.path.join(ROOT, "bench", "results", "jump.json"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/jump.py needs root (ip netns)")
    binary = os.environ.get("RECIPE_BIN", os.path.join(ROOT, "target", "release", "recipe"))
    if not os.path.exists(binary):
        sys.exit(f"no recipe binary at {binary}: cargo build --release, or RECIPE_BIN=path")
    d = tempfile.mkdtemp(prefix="recipe-jump-bench.")
    site = Site(a.nodes, d)
    res = {"nodes": a.nodes, "reps": a.reps, "load": os.getloadavg()[0], "cases": {}}
    try:
        out_dir = os.path.join(d, "out")
        os.makedirs(out_dir)
        inv = os.path.join(d, "inventory.toml")
        inventory(site, inv, out_dir)
        recipe = os.path.join(d, "step.rhai")
        with open(recipe, "w") as f:
            f.write('fn defaults() { #{ out: "" } }\nsh(`echo "$SSH_CONNECTION" > \'${vars.out}\'`);\n')
        plain, cm = os.path.join(d, "ssh_plain"), os.path.join(d, "ssh_cm")
        ssh_config(site, plain, False)
        ssh_config(site, cm, True)
        sh(["ssh", "-F", cm, "-O", "check", "bastion"], check=False)
        sh(["ssh", "-F", cm, "-fN", "bastion"])  # the master, before the clock starts
        cases = {
            "recipe (one shared bastion connection)": lambda: run_recipe(binary, inv, recipe),
            "ssh -J per host": lambda: run_ssh_all(plain, site),
            "ssh -J per host, ControlMaster on the bastion": lambda: run_ssh_all(cm, site),
        }
        for name in cases:
            res["cases"][name] = {"wall": [], "failed": [], "bastion_logins": []}
        for _ in range(a.reps):
            for name, fn in cases.items():
                before = site.bastion_logins()
                wall, failed = timed(fn)
                c = res["cases"][name]
                c["wall"].append(wall)
                c["failed"].append(failed)
                c["bastion_logins"].append(site.bastion_logins() - before)

        # Streamed copies node01 -> node02..node(K+1), all through the bastion.
        k = min(a.copies, a.nodes - 1)
        src = os.path.join(d, "big.bin")
        with open(src, "wb") as f:
            f.write(os.urandom(a.copy_mib << 20))
        copy = os.path.join(d, "copy.rhai")
        with open(copy, "w") as f:
            f.write('fn defaults() { #{ out: "", src: "", tag: "" } }\n'
                    'file(`${vars.out}-copy-${vars.tag}`, #{from_host: "node01", src: vars.src});\n')
        hosts = [f"node{i:02}" for i in range(2, k + 2)]
        copies = {"recipe: from_host through one bastion connection": [],
                  "ssh -J pipes, separate bastion connections": []}
        for rep in range(a.reps):
            dests = [os.path.join(d, f"dest-{rep}-{h}") for h in hosts]

            def rc():
                args = [binary, "run", copy, "-i", inv, "--json", "--var", f"src={src}",
                        "--var", f"tag={rep}"]
                for h in hosts:
                    args += ["--host", h]
                return subprocess.run(args, capture_output=True).returncode

            wall, code = timed(rc)
            copies["recipe: from_host through one bastion connection"].append((wall, code))

            def pipes():
                ps = []
                for h, dest in zip(hosts, dests):
                    i = int(h[4:])
                    cmd = (f"ssh -F {plain} {site.addr(1)} cat {src} | "
                           f"ssh -F {plain} {site.addr(i)} 'cat > {dest}'")
                    ps.append(subprocess.Popen(["sh", "-c", cmd]))
                return sum(1 for p in ps if p.wait() != 0)

            wall, failed = timed(pipes)
            copies["ssh -J pipes, separate bastion connections"].append((wall, failed))
            for p in dests + [f"{out_dir}/{h}-copy-{rep}" for h in hosts]:
                if os.path.exists(p):
                    os.remove(p)
        res["copies"] = {"mib": a.copy_mib, "to": k, "runs": copies}
    finally:
        sh(["ssh", "-F", os.path.join(d, "ssh_cm"), "-O", "exit", "bastion"], check=False)
        site.close()
    with open(a.results, "w") as f:
        json.dump(res, f, indent=1)
    print(f"\n{a.nodes} nodes behind one bastion, {a.reps} runs each, 1-min load at start "
          f"{res['load']:.1f}\n")
    print("| case | wall min / median | failed hosts per run | bastion logins per run |")
    print("|---|---|---|---|")
    for name, c in res["cases"].items():
        print(f"| {name} | {min(c['wall']):.2f} s / **{statistics.median(c['wall']):.2f} s** | "
              f"{', '.join(map(str, c['failed']))} | {', '.join(map(str, c['bastion_logins']))} |")
    cp = res["copies"]
    print(f"\nStreamed copies of {cp['mib']} MiB from node01 to {cp['to']} nodes at once:\n")
    print("| case | wall min / median | aggregate MiB/s (median) | failures |")
    print("|---|---|---|---|")
    for name, runs in cp["runs"].items():
        walls = [w for w, _ in runs]
        med = statistics.median(walls)
        print(f"| {name} | {min(walls):.2f} s / **{med:.2f} s** | {cp['mib'] * cp['to'] / med:.0f} | "
              f"{', '.join(str(x) for _, x in runs)} |")


if __name__ == "__main__":
    main()
