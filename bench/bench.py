#!/usr/bin/env python3
"""recipe vs Ansible vs pyinfra: the seed's munge step, timed in one run on the same hosts.

Run it from the repository's root, as root (it boots sandbox hosts and runs a private sshd):

    python3 bench/bench.py            # the whole benchmark, about 10-15 minutes
    python3 bench/bench.py --quick    # a smoke run: one repetition, fewer hosts

What it does (bench/README.md says more):
  * installs ansible-core and pyinfra from PyPI into bench/.venv-ansible and bench/.venv-pyinfra,
    builds target/release/recipe;
  * case 1, on fresh sandbox hosts (`recipe sandbox up`): first run, idempotent re-run,
    a re-run after one file changed on one host, a dry run: each tool several times;
  * case 2, scale: one local sshd listening on 127.0.2.1..127.0.2.N stands in for N hosts
    (each host works under its own folder); the idempotent check of a file-only variant
    of the same step at 10, 50, 100 hosts, beside the floor: N bare `ssh HOST true`;
  * writes bench/results/latest.json and the generated part of docs/performance.md.

Only the standard library is used; timing is the wall clock around each whole command, CPU
time and peak RSS are the kernel's accounting (wait4, and a cpuacct cgroup when one can be
made, so that processes that leave the process tree, such as ssh ControlPersist masters, are
counted too).
"""

import argparse
import datetime
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
WORK = os.path.join(BENCH, ".work")
RESULTS = os.path.join(BENCH, "results", "latest.json")
DOC = os.path.join(ROOT, "docs", "performance.md")
SVG_NAME = "scale.svg"
SVG = os.path.join(BENCH, "results", SVG_NAME)   # the chart docs/performance.md shows
RECIPE_FILE = os.path.join(ROOT, "recipes", "bench_munge.rhai")
PLAYBOOK = os.path.join(BENCH, "ansible", "munge.yml")
DEPLOY = os.path.join(BENCH, "pyinfra", "munge.py")

# Tools as installed from PyPI; pinned so that two runs of the benchmark compare like with like.
ANSIBLE_PIN = "ansible-core==2.19.14"
PYINFRA_PIN = "pyinfra==3.10.0"
TOOLS = ("recipe", "ansible", "pyinfra")
SCALE_NET = "127.2"            # scale hosts: 127.2.0.1 .. 127.2.3.232 for 1,000, one sshd configuration
SCALE_BASE = "/tmp/recipe-bench"   # each scale host works under SCALE_BASE/<tool>/hN
SHELL_NET = "127.3"            # the same sshd, but sessions get root's real HOME (~/.bashrc)
SANDBOX = "bench"
SANDBOX_HOSTS = ["b1", "b2", "b3"]
SANDBOX_PACKAGES = "python3,python3-apt"   # Ansible's modules need Python (and python3-apt for apt)
# The scale variant only looks at the packages of this machine: they must be installed here.
SCALE_PACKAGES = ["openssh-server", "openssh-client", "coreutils"]
CHANGED_FILE = "/etc/default/munge"
ANSIBLE_SCALE_MAX = 10     # Ansible's scale runs stop here (see case_scale)
PYINFRA_SCALE_MAX = 100    # and pyinfra's here
DEFAULT_KEX_FLOOR_MAX = 250   # the post-quantum floor costs ~0.2 s of CPU a connection: not beyond this
DRIFT = 'OPTIONS="--changed-by-hand"\n'
CGROUP_ROOT = "/sys/fs/cgroup/cpuacct/recipe-bench"
RECIPE_BINS = {}   # "recipe@LABEL" -> binary, from --recipe-bin LABEL=PATH


def cores():
    return os.cpu_count() or 1


# Work that is not the benchmark's may use at most this share of the machine during a run.
OTHERS_MAX_SHARE = 0.10


def load_of(r):
    """The load a run was taken under. With `others_load` (see `measure`): the CPU that work
    other than the benchmark's used during the run, in cores. Older results: the 1-minute
    load average, the larger of before and after."""
    if "others_load" in r:
        return r["others_load"]
    return max(r.get("load1", 0.0), r.get("load1_end", 0.0))


def busy(r):
    """A run taken while other work took more than OTHERS_MAX_SHARE of the machine (older
    results: a load average above the core count): its time says more about the machine."""
    n = r.get("cores", cores())
    if "others_load" in r:
        return r["others_load"] > OTHERS_MAX_SHARE * n
    return "load1" in r and load_of(r) > n


def load_note(r):
    if "others_load" in r:
        limit = OTHERS_MAX_SHARE * r.get("cores", cores())
        return (f"  others {r['others_load']:.2f} cores (load avg {r['load1']:.0f})"
                + (f" > {limit:.2f}: not publishable" if busy(r) else ""))
    if "load1" not in r:
        return ""
    return f"  load {load_of(r):.1f}" + (f" > {cores()} cores: not publishable" if busy(r) else "")


def machine_cpu():
    """CPU seconds every process on the machine has used (user, nice, system, and steal:
    time another guest took from this one), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[7]) / os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, check=True, capture=True, env=None, timeout=None, cwd=ROOT):
    """Runs a setup command (not timed)."""
    r = subprocess.run(cmd, shell=isinstance(cmd, str), cwd=cwd, env=env, timeout=timeout,
                       stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.STDOUT if capture else None, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"bench: command failed ({r.returncode}): {cmd}\n{r.stdout or ''}")
    return r


# ---------------------------------------------------------------------------------------------
# Measuring one command


class Cgroups:
    """cpuacct cgroups (v1) for whole-tree CPU accounting; falls back to wait4 when unavailable."""

    def __init__(self):
        self.ok = False
        self.n = 0
        try:
            os.makedirs(CGROUP_ROOT, exist_ok=True)
            probe = os.path.join(CGROUP_ROOT, "probe")
            os.makedirs(probe, exist_ok=True)
            self.ok = os.path.exists(os.path.join(probe, "cpuacct.usage"))
            os.rmdir(probe)
        except OSError:
            self.ok = False

    def new(self, name=None):
        if not self.ok:
            return None
        self.n += 1
        path = os.path.join(CGROUP_ROOT, name or f"run{os.getpid()}-{self.n}")
        os.makedirs(path, exist_ok=True)
        return path

    @staticmethod
    def usage(path):
        with open(os.path.join(path, "cpuacct.usage")) as f:
            return int(f.read()) / 1e9

    @staticmethod
    def procs(path):
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]

    @staticmethod
    def remove(path):
        for _ in range(50):
            try:
                os.rmdir(path)
                return
            except OSError:
                time.sleep(0.1)


CG = None


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(root):
    """Pids of `root` and everything below it (from /proc)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
            ppid = int(s[s.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def measure(cmd, env=None, out_path=None, cleanup=None, timeout=900):
    """Runs `cmd` (a list) once and returns wall, CPU and memory figures of its whole tree.

    wall: from start to the exit of `cmd`. cpu: user+system of every process it started,
    including ones that left the tree (cgroup), else of the ones it waited for (wait4).
    peak_rss_mb: the largest single process (wait4's ru_maxrss). tree_rss_mb: the largest sum of
    RSS over all its processes at once, sampled every 20 ms.
    """
    cg = CG.new() if CG else None
    full = cmd
    if cg:
        full = ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cg] + list(cmd)
    outf = open(out_path or os.devnull, "w")
    stop = threading.Event()
    peak = {"tree": 0}
    load1 = os.getloadavg()[0]
    # Everything the benchmark runs (this script, tools, sshd, sandbox hosts) is below
    # CGROUP_ROOT: the rest of the machine's CPU during the run is other work.
    own0 = Cgroups.usage(CGROUP_ROOT) if CG else None
    all0 = machine_cpu()
    t0 = time.perf_counter()
    p = subprocess.Popen(full, env=env, stdout=outf, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)

    def sample():
        while not stop.is_set():
            try:
                pids = Cgroups.procs(cg) if cg else descendants(p.pid)
            except OSError:
                pids = []
            tot = sum(rss_kb(x) for x in pids)
            peak["tree"] = max(peak["tree"], tot)
            stop.wait(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.killpg(p.pid, signal.SIGKILL)
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    all1 = machine_cpu()
    own1 = Cgroups.usage(CGROUP_ROOT) if CG else None
    p.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    th.join()
    outf.close()
    if cleanup:
        cleanup()
    cpu = ru.ru_utime + ru.ru_stime
    res = {
        "wall": wall,
        "cpu": cpu,
        "user": ru.ru_utime,
        "sys": ru.ru_stime,
        "peak_rss_mb": ru.ru_maxrss / 1024,
        "tree_rss_mb": peak["tree"] / 1024,
        "rc": p.returncode,
        "load1": load1,
        "load1_end": os.getloadavg()[0],
        "cores": cores(),
    }
    if own0 is not None and own1 is not None and wall > 0:
        res["others_cpu"] = max(0.0, (all1 - all0) - (own1 - own0))
        res["others_load"] = res["others_cpu"] / wall
    if cg:
        # Whatever the command left running in its cgroup (processes this run started): stop it.
        for _ in range(30):
            left = Cgroups.procs(cg)
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        res["cpu"] = Cgroups.usage(cg)
        Cgroups.remove(cg)
    return res


# ---------------------------------------------------------------------------------------------
# Tools


def scale_addr(i, net=SCALE_NET):
    """The loopback address of scale host i (1-based): 254 hosts per /24, as many /24s as needed."""
    return f"{net}.{(i - 1) // 254}.{(i - 1) % 254 + 1}"


def venv_setup(tools):
    """bench/.venv-ansible and bench/.venv-pyinfra, from PyPI (for the tools that run)."""
    py = os.environ.get("PYTHON", sys.executable)
    for name, pin, exe in (("ansible", ANSIBLE_PIN, "ansible-playbook"), ("pyinfra", PYINFRA_PIN, "pyinfra")):
        if name not in tools:
            continue
        venv = os.path.join(BENCH, f".venv-{name}")
        marker = os.path.join(venv, ".bench-pin")
        if os.path.exists(marker) and open(marker).read().strip() == pin:
            continue
        log(f"installing {pin} into {os.path.relpath(venv, ROOT)}")
        if not os.path.exists(os.path.join(venv, "bin", "pip")):
            sh([py, "-m", "venv", venv])
        sh([os.path.join(venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check", pin])
        if not os.path.exists(os.path.join(venv, "bin", exe)):
            raise SystemExit(f"bench: {exe} missing after installing {pin}")
        with open(marker, "w") as f:
            f.write(pin + "\n")


def recipe_bin():
    return os.environ.get("RECIPE_BIN", os.path.join(WORK, "recipe"))


def build_recipe():
    """Builds the release binary and copies it: a rebuild by someone else mid-run changes nothing."""
    if os.environ.get("RECIPE_BIN"):
        return
    log("cargo build --release")
    sh(["cargo", "build", "--release", "-q"], capture=False)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    # Copy, then rename: the old copy may be running (a sandbox's file server, say).
    shutil.copy2(os.path.join(target, "release", "recipe"), recipe_bin() + ".new")
    os.replace(recipe_bin() + ".new", recipe_bin())


def tool_versions():
    v = {}
    r = sh([recipe_bin(), "--version"], check=False)
    v["recipe"] = r.stdout.strip()
    rev = sh(["git", "rev-parse", "--short", "HEAD"], check=False).stdout.strip()
    dirty = sh(["git", "status", "--porcelain", "--untracked-files=no", "src"], check=False).stdout.strip()
    v["recipe"] += f" (git {rev}{', src/ modified' if dirty else ''})"
    # A tool left out of the run (--tools) may not be installed: its version is unknown then.
    exe = os.path.join(BENCH, ".venv-ansible", "bin", "ansible")
    r = sh([exe, "--version"], check=False) if os.path.exists(exe) else None
    v["ansible"] = r.stdout.splitlines()[0] if r and r.stdout else "?"
    exe = os.path.join(BENCH, ".venv-pyinfra", "bin", "pyinfra")
    r = sh([exe, "--version"], check=False) if os.path.exists(exe) else None
    v["pyinfra"] = r.stdout.strip() if r else "?"
    v["python"] = platform.python_version()
    v["openssh"] = sh(["ssh", "-V"], check=False).stdout.strip()
    return v


def machine():
    m = {"kernel": platform.release(), "cores": os.cpu_count()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                m["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                m["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                m["os"] = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    hv = sh("lscpu 2>/dev/null | sed -n 's/^Hypervisor vendor: *//p'", check=False).stdout.strip()
    ct = sh("systemd-detect-virt --container 2>/dev/null || true", check=False).stdout.strip()
    parts = ([f"{hv} guest"] if hv else []) + ([f"in a {ct} container"] if ct and ct != "none" else [])
    m["virtualization"] = ", ".join(parts) or "bare metal, as far as can be seen"
    return m


class Tool:
    """How each tool is run on an inventory, and how its own report says what changed."""

    def __init__(self, name):
        # "recipe", "ansible", "pyinfra", or "recipe@LABEL" for a binary given with --recipe-bin.
        self.name = name
        self.kind = name.split("@")[0]
        self.bin = RECIPE_BINS.get(name) or recipe_bin()

    def command(self, inv, nhosts, dry, forks=None):
        if self.kind == "recipe":
            # 1,000 handshakes at once on 2 shared cores can take longer than the default 15 s
            # connect timeout; the floor's OpenSSH clients wait without limit, so recipe may too.
            c = [self.bin, "run", RECIPE_FILE, "-i", inv["recipe"], "--group", "all",
                 "--json", "--connect-timeout", "300"]
            if self.name != DEFAULT_FORKS:   # that one: recipe's own default
                c += ["--forks", str(forks or max(nhosts, 1))]
            return c + (["--dry-run"] if dry else [])
        if self.kind == "ansible":
            c = [os.path.join(BENCH, ".venv-ansible", "bin", "ansible-playbook"), "-i", inv["ansible"],
                 PLAYBOOK, "-f", str(max(nhosts, 1))]
            return c + (["--check"] if dry else [])
        # -y: no prompt, and no separate change-detection pass; --dry: detect and show changes only.
        c = [os.path.join(BENCH, ".venv-pyinfra", "bin", "pyinfra"), "--dry" if dry else "-y",
             "--parallel", str(max(nhosts, 1)), inv["pyinfra"], DEPLOY]
        return c

    def env(self, run_dir):
        e = dict(os.environ)
        e["NO_COLOR"] = "1"
        if self.kind == "recipe":
            e["RECIPE_STATS"] = "1"
        elif self.kind == "ansible":
            e["ANSIBLE_CONFIG"] = os.path.join(BENCH, "ansible", "ansible.cfg")
            e["ANSIBLE_NOCOLOR"] = "1"
            # A fresh ControlPath folder per run: every tool starts each run with new connections.
            e["ANSIBLE_SSH_CONTROL_PATH_DIR"] = os.path.join(run_dir, "cp")
            e["ANSIBLE_LOCAL_TEMP"] = os.path.join(run_dir, "tmp")
        elif self.kind == "pyinfra":
            e["PYINFRA_PROGRESS"] = "off"
        return e

    def cleanup(self, run_dir):
        """Ends the ssh ControlPersist masters an Ansible run leaves behind (politely)."""
        if self.kind != "ansible":
            return lambda: None

        def f():
            cp = os.path.join(run_dir, "cp")
            if not os.path.isdir(cp):
                return
            for s in os.listdir(cp):
                subprocess.run(["ssh", "-o", f"ControlPath={os.path.join(cp, s)}", "-O", "exit", "x"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
        return f

    def parse(self, out_text):
        """Per host: (ok, changed, failed) as the tool reports it; plus engine stats for recipe."""
        hosts, stats = {}, None
        if self.kind == "recipe":
            steps = {}
            for line in out_text.splitlines():
                if not line.startswith("{"):
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("event") == "recap":
                    hosts[ev["host"]] = {"ok": ev["ok"], "changed": ev["changed"],
                                         "failed": ev["failed"] + (1 if ev.get("unreachable") else 0)}
                elif ev.get("event") == "step":
                    steps[ev["host"]] = steps.get(ev["host"], 0) + 1
                elif ev.get("event") == "stats":
                    stats = ev
            if stats is not None:
                stats["steps"] = steps
        elif self.kind == "ansible":
            for m in re.finditer(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                                 out_text, re.M):
                hosts[m.group(1)] = {"ok": int(m.group(2)), "changed": int(m.group(3)),
                                     "failed": int(m.group(4)) + int(m.group(5))}
        else:
            # pyinfra 3 prints, under each "--> Starting operation", one line per host:
            # "    [h1]  Success" (it ran commands: changed), "No changes", or an error.
            for m in re.finditer(r"^\s+\[(\S+)\]\s+(Connected|Success|No changes|Error|Failed|Could not connect)",
                                 out_text, re.M):
                h = hosts.setdefault(m.group(1), {"ok": 0, "changed": 0, "failed": 0})
                w = m.group(2)
                if w == "Success":
                    h["changed"] += 1
                elif w == "No changes":
                    h["ok"] += 1
                elif w != "Connected":
                    h["failed"] += 1
            # --dry prints a table instead: "    Operation   Change   Conditional Change",
            # each change as "N (h1, h2)".
            if "--> Detected changes:" in out_text:
                table = out_text.split("--> Detected changes:", 1)[1].split("\n\n", 1)[0]
                for row in table.splitlines()[2:]:
                    cols = re.split(r"\s{2,}", row.strip())
                    if len(cols) >= 2 and cols[1] != "-":
                        m = re.search(r"\((.*)\)", cols[1])
                        for name in (m.group(1).split(", ") if m else []):
                            if name in hosts:
                                hosts[name]["changed"] += 1
        return hosts, stats


# ---------------------------------------------------------------------------------------------
# Inventories


def write_inventories(d, hosts, common):
    """One inventory per tool for `hosts` [(name, address, port, key, vars)] and shared vars.

    `common` carries known_hosts plus the variables every host gets.
    """
    os.makedirs(d, exist_ok=True)
    kh = common["known_hosts"]
    vars_ = common["vars"]

    def toml_val(v):
        return json.dumps(v)   # strings and lists of strings: JSON is valid TOML for these

    lines = [f"known_hosts = {toml_val(kh)}", "", "[vars]"]
    lines += [f"{k} = {toml_val(v)}" for k, v in vars_.items()]
    for name, addr, port, key, hv in hosts:
        lines += ["", f"[hosts.{name}]", f"address = {toml_val(addr)}", f"port = {port}",
                  'user = "root"', f"key = {toml_val(key)}"]
        if hv:
            lines.append("vars = { " + ", ".join(f"{k} = {toml_val(v)}" for k, v in hv.items()) + " }")
    with open(os.path.join(d, "inventory.toml"), "w") as f:
        f.write("\n".join(lines) + "\n")

    ans = {"all": {"hosts": {}, "vars": dict(vars_)}}
    ans["all"]["vars"]["ansible_ssh_common_args"] = f"-o UserKnownHostsFile={kh}"
    for name, addr, port, key, hv in hosts:
        h = {"ansible_host": addr, "ansible_port": port, "ansible_user": "root",
             "ansible_ssh_private_key_file": key}
        h.update(hv)
        ans["all"]["hosts"][name] = h
    with open(os.path.join(d, "inventory.yml"), "w") as f:
        json.dump(ans, f, indent=1)   # JSON is YAML

    py = ["# Generated by bench/bench.py", "hosts = ["]
    for name, addr, port, key, hv in hosts:
        data = {"ssh_hostname": addr, "ssh_port": port, "ssh_user": "root", "ssh_key": key,
                "ssh_known_hosts_file": kh, "ssh_strict_host_key_checking": "yes",
                "ssh_allow_agent": False, "ssh_look_for_keys": False}
        data.update(vars_)
        data.update(hv)
        py.append(f"    ({name!r}, {data!r}),")
    py.append("]")
    with open(os.path.join(d, "inventory.py"), "w") as f:
        f.write("\n".join(py) + "\n")
    return {"recipe": os.path.join(d, "inventory.toml"), "ansible": os.path.join(d, "inventory.yml"),
            "pyinfra": os.path.join(d, "inventory.py")}


# ---------------------------------------------------------------------------------------------
# The local sshd that stands in for many hosts


class LocalSshd:
    """OpenSSH's sshd on loopback addresses standing in for many hosts.

    One configuration; since one sshd process listens on at most 16 sockets (MAX_LISTEN_SOCKS),
    it runs as several daemons of 16 addresses each, all in one cgroup (for the server's CPU).
    """

    PER_DAEMON = 16

    def __init__(self, nmax, with_shell_hosts):
        self.dir = os.path.join(WORK, "sshd")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(os.path.join(self.dir, "home"))
        self.key = os.path.join(WORK, "id_ed25519")
        self.hostkey = os.path.join(WORK, "ssh_host_ed25519_key")
        if not os.path.exists(self.hostkey):
            sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.hostkey])
        with open(self.key + ".pub") as f:
            pub = f.read()
        with open(os.path.join(self.dir, "authorized_keys"), "w") as f:
            f.write(pub)
        self.nmax = nmax
        self.shell_hosts = with_shell_hosts
        addrs = [scale_addr(i) for i in range(1, nmax + 1)] + \
                [scale_addr(i, SHELL_NET) for i in range(1, with_shell_hosts + 1)]
        self.port = self.free_port(addrs)
        common = [
            f"HostKey {self.hostkey}",
            f"AuthorizedKeysFile {self.dir}/authorized_keys",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "StrictModes no",
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            # N clients connect at once: OpenSSH's default 10:30:100 would drop most of them.
            "MaxStartups 1000:30:1000",
            "MaxSessions 20",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            # Sessions on SCALE_NET get an empty HOME: root's ~/.bashrc here runs `pyenv init`
            # (~100 ms a channel), which would charge every tool per channel opened. SHELL_NET
            # keeps root's real HOME to show that effect.
            f"Match LocalAddress {SCALE_NET}.*",
            f"    SetEnv HOME={self.dir}/home",
        ]
        self.cg = CG.new("sshd") if CG and CG.ok else None
        self.procs, self.logs = [], []
        for i in range(0, len(addrs), self.PER_DAEMON):
            k = i // self.PER_DAEMON
            cfg = [f"ListenAddress {a}:{self.port}" for a in addrs[i:i + self.PER_DAEMON]]
            cfg.append(f"PidFile {self.dir}/sshd-{k}.pid")
            path = os.path.join(self.dir, f"sshd_config-{k}")
            with open(path, "w") as f:
                f.write("\n".join(cfg + common) + "\n")
            sh(["/usr/sbin/sshd", "-t", "-f", path])
            logp = os.path.join(self.dir, f"sshd-{k}.log")
            open(logp, "w").close()
            cmd = ["/usr/sbin/sshd", "-D", "-f", path, "-E", logp]
            if self.cg:
                cmd = ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', self.cg] + cmd
            self.procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL))
            self.logs.append(logp)
        for _ in range(400):
            if sum(open(p).read().count("Server listening") for p in self.logs) >= len(addrs):
                break
            time.sleep(0.05)
        else:
            self.stop()
            raise SystemExit(f"bench: the local sshd did not start; see {self.dir}/sshd-*.log")
        with open(self.hostkey + ".pub") as f:
            hk = " ".join(f.read().split()[:2])
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        with open(self.known_hosts, "w") as f:
            for a in addrs:
                f.write(f"[{a}]:{self.port} {hk}\n")
        log(f"local sshd ({len(self.procs)} listeners) on {scale_addr(1)}-{scale_addr(nmax)} port {self.port}")

    @staticmethod
    def free_port(addrs):
        for port in range(2222, 2300):
            ok = True
            for addr in addrs:
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((addr, port))
                except OSError:
                    ok = False
                finally:
                    sock.close()
                if not ok:
                    break
            if ok:
                return port
        raise SystemExit("bench: no free port for the local sshd")

    def cpu(self):
        return Cgroups.usage(self.cg) if self.cg else None

    def log_offset(self):
        return [os.path.getsize(p) for p in self.logs]

    def sessions_since(self, off):
        """Connections and sessions (exec, shell, subsystem) logged since `off`."""
        time.sleep(0.2)   # let the last sshd children write their lines
        text = ""
        for p, o in zip(self.logs, off):
            with open(p, errors="replace") as f:
                f.seek(o)
                text += f.read()
        return {"connections": text.count("Accepted publickey"),
                "sessions": text.count("Starting session:"),
                "sftp": len(re.findall(r"subsystem request for sftp", text))}

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.cg:
            # sshd's children (sessions) end with their connections; wait for the cgroup to empty.
            for _ in range(50):
                if not Cgroups.procs(self.cg):
                    break
                time.sleep(0.1)
            Cgroups.remove(self.cg)

    def hosts(self, n, net=SCALE_NET, base_root=None):
        base_root = base_root or SCALE_BASE
        return [(f"h{i}", scale_addr(i, net), self.port, self.key, {"base": f"{base_root}/h{i}"})
                for i in range(1, n + 1)]


def reads_script(base, packages=SCALE_PACKAGES):
    """What the file-only munge step reads on one host, by hand, in one script: the package
    query, `stat` of the two folders, `stat` and `sha256sum` of the key and the options file.
    The physical limit of an agentless tool that really checks state: one login, one command."""
    q = shlex.quote
    files = [f"{base}/etc/munge/munge.key", f"{base}/etc/default/munge"]
    dirs = [f"{base}/var/log/munge", f"{base}/etc/munge"]
    return ("LC_ALL=C; export LC_ALL; "
            f"dpkg-query -W -f='${{Package}} ${{db:Status-Abbrev}}\\n' {' '.join(map(q, packages))}; "
            f"stat -c '%f|%U|%G|%s' -- {' '.join(map(q, dirs + files))}; "
            + " ".join(f"sha256sum < {q(f)};" for f in files))


def floor_script(path, addrs, port, key, known_hosts, kex=None, scripts=None):
    """N OpenSSH connections at once, each running `true`: what any SSH tool must pay; or,
    with `scripts` (address -> command), each running the reads of its host in one command.

    `kex`: the key exchange to use; None = the client's default (sntrup761x25519 in OpenSSH 9.x,
    about 100 ms of CPU on each side), "curve25519-sha256" = what recipe (russh) negotiates.
    """
    ssh = (f"ssh -F /dev/null -i {shlex.quote(key)} -o UserKnownHostsFile={shlex.quote(known_hosts)} "
           f"-o BatchMode=yes -o StrictHostKeyChecking=yes -o ControlMaster=no -o LogLevel=ERROR -p {port}")
    if kex:
        ssh += f" -o KexAlgorithms={kex}"
    with open(path, "w") as f:
        f.write("#!/bin/sh\n# Generated by bench/bench.py: a floor (bare connections, or one script each).\n")
        for a in addrs:
            cmd = shlex.quote(scripts[a]) if scripts else "true"
            f.write(f"{ssh} root@{a} {cmd} >/dev/null &\n")
        f.write("wait\n")
    return path


FLOORS = {"floor": None, "floor-c25519": "curve25519-sha256", "floor-script": "curve25519-sha256"}
# The floors that run the step's reads in one command per host (the others run `true`).
SCRIPT_FLOORS = {"floor-script"}


# ---------------------------------------------------------------------------------------------
# Runs


class Bench:
    def __init__(self, args):
        self.args = args
        self.runs = []
        self.notes = []
        self.n = 0

    def run(self, case, tool, inv, nhosts, dry=False, sshd=None, extra=None, expect=None, forks=None):
        """One timed run of `tool`; records it and checks what the tool reported."""
        self.n += 1
        run_dir = os.path.join(WORK, "runs", f"{self.n:04d}-{case}-{tool.name}-{nhosts}")
        os.makedirs(run_dir, exist_ok=True)
        out_path = os.path.join(run_dir, "output.txt")
        off = sshd.log_offset() if sshd else None
        cpu0 = sshd.cpu() if sshd else None
        t_start = time.time()
        r = measure(tool.command(inv, nhosts, dry, forks), env=tool.env(run_dir), out_path=out_path,
                    cleanup=tool.cleanup(run_dir))
        r["t_start"], r["t_end"] = t_start, time.time()
        text = open(out_path, errors="replace").read()
        hosts, stats = tool.parse(text)
        r.update({"case": case, "tool": tool.name, "hosts": nhosts, "dry": dry, "per_host": hosts,
                  "output": os.path.relpath(out_path, ROOT)})
        if stats:
            r["stats"] = stats
        if sshd:
            r.update(sshd.sessions_since(off))
            c1 = sshd.cpu()
            if cpu0 is not None and c1 is not None:
                r["server_cpu"] = c1 - cpu0
        if extra:
            r.update(extra)
        changed = sum(h["changed"] for h in hosts.values())
        failed = sum(h["failed"] for h in hosts.values())
        r["changed"], r["failed"] = changed, failed
        problem = None
        if r["rc"] != 0 and not (tool.kind == "ansible" and dry and failed == 0):
            problem = f"exit status {r['rc']}"
        elif len(hosts) != nhosts:
            problem = f"reported {len(hosts)} of {nhosts} hosts"
        elif failed:
            problem = f"{failed} failures"
        elif expect == "none" and changed:
            problem = f"{changed} changes where none were expected"
        elif expect == "some" and not changed:
            problem = "no change where one was expected"
        r["problem"] = problem
        self.runs.append(r)
        log(f"{case:<12} {tool.name:<8} {nhosts:>3} hosts  {r['wall']:7.2f} s  cpu {r['cpu']:6.2f} s  "
            f"rss {r['peak_rss_mb']:6.1f} MB  changed {changed}" + load_note(r)
            + (f"  PROBLEM: {problem} ({out_path})" if problem else ""))
        return r

    def count_script(self, addrs, sshd, scripts):
        """The processes the one-script floor's reads start on each host, counted as recipe
        counts its own (how far the host's last pid moves while they run, read by builtins),
        one host at a time; not timed."""
        self.n += 1
        total = 0
        for a in addrs:
            bracket = ("read -r _ _ _ _ p0 </proc/loadavg; { " + scripts[a] + " } >/dev/null 2>&1; "
                       "read -r _ _ _ _ p1 </proc/loadavg; echo pids=$((p1 - p0))")
            out = sh(["ssh", "-F", "/dev/null", "-i", sshd.key, "-o", f"UserKnownHostsFile={sshd.known_hosts}",
                      "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
                      "-p", str(sshd.port), f"root@{a}", bracket]).stdout
            m = re.search(r"pids=(-?\d+)", out)
            if not m:
                raise SystemExit(f"bench: the one-script floor's count on {a} printed {out!r}")
            d = int(m.group(1))
            if d < 0:   # the pid counter wrapped: past pid_max the kernel starts again at 300
                d += int(open("/proc/sys/kernel/pid_max").read()) - 300
            total += d
        self.runs.append({"case": "count", "tool": "floor-script", "hosts": len(addrs), "dry": False,
                          "per_host": {}, "problem": None, "remote_pids": total, "wall": 0.0, "cpu": 0.0,
                          "peak_rss_mb": 0.0, "tree_rss_mb": 0.0})
        log(f"count        floor-script {len(addrs):>3} hosts  {total / len(addrs):.1f} processes per host")

    def floor(self, addrs, sshd, key, label, case="floor", kind="floor", extra=None, scripts=None):
        self.n += 1
        script = floor_script(os.path.join(WORK, f"{kind}-{label}.sh"), addrs, sshd.port, key,
                              sshd.known_hosts, FLOORS[kind], scripts if kind in SCRIPT_FLOORS else None)
        off, cpu0 = sshd.log_offset(), sshd.cpu()
        r = measure(["/bin/sh", script])
        r.update({"case": case, "tool": kind, "hosts": len(addrs), "dry": False, "per_host": {}})
        r.update(sshd.sessions_since(off))
        c1 = sshd.cpu()
        if cpu0 is not None and c1 is not None:
            r["server_cpu"] = c1 - cpu0
        r["problem"] = None if r["sessions"] == len(addrs) else f"{r['sessions']} of {len(addrs)} connections ran"
        if extra:
            r.update(extra)
        self.runs.append(r)
        if r["rc"] != 0 and not r["problem"]:
            r["problem"] = f"exit status {r['rc']}"
        log(f"{case:<12} {kind:<8} {len(addrs):>3} hosts  {r['wall']:7.2f} s  cpu {r['cpu']:6.2f} s"
            + load_note(r) + (f"  PROBLEM: {r['problem']}" if r["problem"] else ""))
        return r


# ---------------------------------------------------------------------------------------------
# Case 1: the sandbox


def sandbox_up(b):
    rb = recipe_bin()
    sh([rb, "sandbox", "down", "--name", SANDBOX], check=False)
    t0 = time.time()
    r = sh([rb, "sandbox", "up", "--name", SANDBOX, "--hosts", ",".join(SANDBOX_HOSTS),
            "--packages", SANDBOX_PACKAGES], check=False, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"bench: recipe sandbox up failed:\n{r.stdout[-3000:]}")
    m = re.search(r"(/\S+/inventory\.toml)", r.stdout)
    root = os.environ.get("RECIPE_SANDBOX_ROOT", "/var/lib/recipe")
    inv = m.group(1) if m else os.path.join(root, "sandbox", SANDBOX, "inventory.toml")
    log(f"sandbox {SANDBOX} up in {time.time() - t0:.1f} s: {inv}")
    with open(inv, "rb") as f:
        t = tomllib.load(f)
    kh = t.get("known_hosts")
    hosts = []
    for name in SANDBOX_HOSTS:
        h = t["hosts"][name]
        key = h.get("key")
        hosts.append((name, h.get("address", name), int(h.get("port", 22)), key, {}))
    return hosts, kh


def ssh_cmd(addr, port, key, kh, cmd):
    return ["ssh", "-F", "/dev/null", "-i", key, "-o", f"UserKnownHostsFile={kh}", "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR", "-p", str(port), f"root@{addr}", cmd]


def case_sandbox(b, reps, k, tools):
    """First run, idempotent re-run, one file changed on one host, dry run: on fresh hosts."""
    key = os.path.join(WORK, "munge.key")
    order = list(tools)
    for rep in range(reps):
        for tool_name in order:
            tool = Tool(tool_name)
            hosts, kh = sandbox_up(b)
            # Log every session (exec, sftp) so that channels per host can be counted afterwards.
            for name, addr, port, hkey, _ in hosts:
                sh(ssh_cmd(addr, port, hkey, kh,
                           "printf 'LogLevel VERBOSE\\n' > /etc/ssh/sshd_config.d/zz-bench.conf && systemctl reload ssh"))
            d = os.path.join(WORK, "sandbox-inv")
            inv = write_inventories(d, hosts, {"known_hosts": kh, "vars": {"key_src": key}})
            first_host = hosts[0]

            def drift():
                name, addr, port, hkey, _ = first_host
                sh(ssh_cmd(addr, port, hkey, kh, f"printf '%s' {shlex.quote(DRIFT)} > {CHANGED_FILE}"))

            runs = [b.run("first", tool, inv, len(hosts), expect="some")]
            for _ in range(k):
                runs.append(b.run("idempotent", tool, inv, len(hosts), expect="none"))
            for _ in range(k):
                drift()
                runs.append(b.run("one-changed", tool, inv, len(hosts), expect="some"))
            for _ in range(k):
                drift()
                runs.append(b.run("dry-run", tool, inv, len(hosts), dry=True, expect="some"))
            count_sandbox_sessions(hosts, kh, runs)
        order = order[1:] + order[:1]   # rotate who goes first
    sh([recipe_bin(), "sandbox", "down", "--name", SANDBOX], check=False)


def count_sandbox_sessions(hosts, kh, runs):
    """Sessions per host of each run, from each host's sshd journal (LogLevel VERBOSE)."""
    t0 = min(r["t_start"] for r in runs) - 1
    per_run = [{"sessions": 0, "connections": 0} for _ in runs]
    for name, addr, port, hkey, _ in hosts:
        r = sh(ssh_cmd(addr, port, hkey, kh, f"journalctl -q -o short-unix --since @{int(t0)} _COMM=sshd"),
               check=False)
        for line in r.stdout.splitlines():
            try:
                ts = float(line.split()[0])
            except (ValueError, IndexError):
                continue
            for i, run in enumerate(runs):
                if run["t_start"] <= ts <= run["t_end"]:
                    if "Starting session:" in line:
                        per_run[i]["sessions"] += 1
                    elif "Accepted publickey" in line:
                        per_run[i]["connections"] += 1
    for run, c in zip(runs, per_run):
        run.update(c)


# ---------------------------------------------------------------------------------------------
# Case 2: scale against one local sshd


def case_scale(b, sizes, reps, tools, shell_hosts, default_forks=True):
    nmax = max(sizes)
    sshd = LocalSshd(nmax, shell_hosts)
    try:
        key = os.path.join(WORK, "munge.key")
        per_tool_inv = {}
        common = {"known_hosts": sshd.known_hosts,
                  "vars": {"key_src": key, "packages": SCALE_PACKAGES, "owner": "root", "service": ""}}
        for t in tools:
            for n in sizes:
                hosts = sshd.hosts(n, base_root=f"{SCALE_BASE}/{t}")
                for _, _, _, _, hv in hosts:
                    os.makedirs(os.path.join(hv["base"], "etc", "default"), exist_ok=True)
                per_tool_inv[(t, n)] = write_inventories(os.path.join(WORK, f"scale-{t}-{n}"), hosts, common)
        def sizes_of(t):
            # Ansible runs Python on the target for every task: on 2 shared cores 100 such hosts
            # take minutes per run, so it is measured at the smallest size only.
            # pyinfra holds a Python greenlet and a paramiko connection per host; past 100 hosts
            # a run takes long enough that the sweep would be mostly pyinfra.
            cap = {"ansible": ANSIBLE_SCALE_MAX, "pyinfra": PYINFRA_SCALE_MAX}.get(t.split("@")[0])
            return [n for n in sizes if cap is None or n <= max(sizes[0], cap)]

        # Converge every tool's folders once (not timed): what follows is the idempotent check.
        for t in tools:
            n = max(sizes_of(t))
            r = b.run("converge", Tool(t), per_tool_inv[(t, n)], n, sshd=sshd)
            if r["problem"]:
                raise SystemExit(f"bench: {t} could not converge the scale hosts: {r['problem']}")
        addrs = {n: [scale_addr(i) for i in range(1, n + 1)] for n in sizes}
        # The one-script floor reads what recipe's check reads, in recipe's folders.
        reads_of = "recipe" if "recipe" in tools else tools[0]
        scripts = {scale_addr(i): reads_script(f"{SCALE_BASE}/{reads_of}/h{i}") for i in range(1, nmax + 1)}
        b.floor(addrs[min(sizes)], sshd, sshd.key, "warmup", case="warmup")
        timed = list(tools)
        if "recipe" in tools and default_forks:
            # What a user gets without --forks: the same check on recipe's hosts, at most
            # 32 of them at once, beside the every-host-at-once run that compares with the floors.
            timed.append(DEFAULT_FORKS)
            for n in sizes:
                per_tool_inv[(DEFAULT_FORKS, n)] = per_tool_inv[("recipe", n)]
        for n in sizes:
            floors = [f for f in FLOORS if f != "floor" or n <= max(sizes[0], DEFAULT_KEX_FLOOR_MAX)]
            order = floors + [t for t in timed if n in sizes_of(t)]
            for rep in range(reps):
                for t in order:
                    if t in FLOORS:
                        b.floor(addrs[n], sshd, sshd.key, str(n), case="scale", kind=t, scripts=scripts)
                    else:
                        b.run("scale", Tool(t), per_tool_inv[(t, n)], n, sshd=sshd, expect="none")
                order = order[1:] + order[:1]
        # Processes per host, counted apart from the timed runs: the pid counter that counts
        # them is the machine's, so with every host at once each host's count would hold the
        # others' processes. One host at a time (recipe --forks 1, the floor's sessions one by one).
        n0 = min(min(sizes), COUNT_HOSTS)
        for t in tools:
            if Tool(t).kind == "recipe":
                hosts = sshd.hosts(n0, base_root=f"{SCALE_BASE}/{t}")
                inv = write_inventories(os.path.join(WORK, f"count-{t}-{n0}"), hosts, common)
                b.run("count", Tool(t), inv, n0, sshd=sshd, expect="none", forks=1)
        b.count_script([scale_addr(i) for i in range(1, n0 + 1)], sshd, scripts)
        if shell_hosts:
            # The same idempotent check with root's real login shell (~/.bashrc runs pyenv init).
            common_shell = dict(common)
            invs = {}
            for t in tools:
                hosts = sshd.hosts(shell_hosts, net=SHELL_NET, base_root=f"{SCALE_BASE}/{t}")
                invs[t] = write_inventories(os.path.join(WORK, f"shell-{t}"), hosts, common_shell)
            for rep in range(reps):
                for kind in FLOORS:
                    b.floor([scale_addr(i, SHELL_NET) for i in range(1, shell_hosts + 1)], sshd, sshd.key,
                            "shell", case="shell", kind=kind)
                for t in tools:
                    if t == "ansible" and rep > 0:
                        continue   # about a minute a run: once is enough to show the effect
                    b.run("shell", Tool(t), invs[t], shell_hosts, sshd=sshd, expect="none")
    finally:
        sshd.stop()
        shutil.rmtree(SCALE_BASE, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Case 4: a slow link


# recipe with its default --forks in case 2 (the row is timed on recipe's own hosts).
DEFAULT_FORKS = "recipe@default-forks"

# Hosts whose processes are counted one at a time after the timed scale runs (not timed).
COUNT_HOSTS = 10

LATENCY_NET = "127.4"   # forwarders that add the delay, one per host, in front of SCALE_NET's sshd


def case_latency(b, delay_ms, nhosts, reps, tools):
    """The idempotent check of case 2 on `nhosts` hosts whose every byte passes a forwarder
    (bench/delay.py) adding `delay_ms` each way; all tools and the three floors, interleaved."""
    sshd = LocalSshd(nhosts, 0)
    fwd = None
    try:
        key = os.path.join(WORK, "munge.key")
        direct = {t: sshd.hosts(nhosts, base_root=f"{SCALE_BASE}/{t}") for t in tools}
        common = {"known_hosts": sshd.known_hosts,
                  "vars": {"key_src": key, "packages": SCALE_PACKAGES, "owner": "root", "service": ""}}
        # Converge on the direct addresses (not timed).
        for t in tools:
            for _, _, _, _, hv in direct[t]:
                os.makedirs(os.path.join(hv["base"], "etc", "default"), exist_ok=True)
            inv = write_inventories(os.path.join(WORK, f"latency-direct-{t}"), direct[t], common)
            r = b.run("converge", Tool(t), inv, nhosts, sshd=sshd)
            if r["problem"]:
                raise SystemExit(f"bench: {t} could not converge the latency hosts: {r['problem']}")
        slow = [scale_addr(i, LATENCY_NET) for i in range(1, nhosts + 1)]
        pairs = [f"{a}:{sshd.port}={scale_addr(i + 1)}:{sshd.port}" for i, a in enumerate(slow)]
        fwd = subprocess.Popen([sys.executable, os.path.join(BENCH, "delay.py"), "--delay-ms", str(delay_ms)]
                               + pairs, stdout=subprocess.PIPE, text=True)
        if fwd.stdout.readline().strip() != "ready":
            raise SystemExit("bench: the delaying forwarder did not start")
        with open(sshd.hostkey + ".pub") as f:
            hk = " ".join(f.read().split()[:2])
        with open(sshd.known_hosts, "a") as f:
            for a in slow:
                f.write(f"[{a}]:{sshd.port} {hk}\n")
        invs = {}
        for t in tools:
            hosts = [(n, slow[i], port, k, hv) for i, (n, _, port, k, hv) in enumerate(direct[t])]
            invs[t] = write_inventories(os.path.join(WORK, f"latency-{t}"), hosts, common)
        reads_of = "recipe" if "recipe" in tools else tools[0]
        scripts = {slow[i]: reads_script(f"{SCALE_BASE}/{reads_of}/h{i + 1}") for i in range(nhosts)}
        extra = {"delay_ms": delay_ms}
        order = list(FLOORS) + list(tools)
        for _ in range(reps):
            for t in order:
                if t in FLOORS:
                    b.floor(slow, sshd, sshd.key, "latency", case="latency", kind=t, extra=extra, scripts=scripts)
                else:
                    b.run("latency", Tool(t), invs[t], nhosts, sshd=sshd, expect="none", extra=extra)
            order = order[1:] + order[:1]
    finally:
        if fwd:
            fwd.terminate()
            try:
                fwd.wait(10)
            except subprocess.TimeoutExpired:
                fwd.kill()
        sshd.stop()
        shutil.rmtree(SCALE_BASE, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Report


def med(xs):
    return statistics.median(xs) if xs else None


def summarize(runs):
    groups = {}
    for r in runs:
        if r.get("problem"):
            continue
        groups.setdefault((r["case"], r["tool"], r["hosts"]), []).append(r)
    s = {}
    for key, rs in groups.items():
        n = key[2] or 1
        e = {
            "n": len(rs),
            "wall_min": min(r["wall"] for r in rs), "wall_med": med([r["wall"] for r in rs]),
            "cpu_med": med([r["cpu"] for r in rs]),
            "rss_med": med([r["peak_rss_mb"] for r in rs]),
            "tree_rss_med": med([r["tree_rss_mb"] for r in rs]),
            "rss_max": max(r["peak_rss_mb"] for r in rs),
            "changed_med": med([r.get("changed", 0) for r in rs]),
            "load_max": max((load_of(r) for r in rs if "load1" in r), default=None),
            "busy": any(busy(r) for r in rs),
        }
        if all("sessions" in r for r in rs):
            e["sessions_per_host"] = med([r["sessions"] for r in rs]) / n
            e["connections_per_host"] = med([r.get("connections", 0) for r in rs]) / n
        if all("server_cpu" in r for r in rs):
            e["server_cpu_med"] = med([r["server_cpu"] for r in rs])
        if all("remote_pids" in r for r in rs):
            e["remote_pids_per_host"] = med([r["remote_pids"] for r in rs]) / n
        st = [r["stats"] for r in rs if r.get("stats")]
        if st:
            e["channels_per_host"] = med([x["channels"] for x in st]) / n
            e["round_trips_per_host"] = med([x["round_trips"] for x in st]) / n
            if all("remote_pids" in x for x in st):
                e["remote_pids_per_host"] = med([x["remote_pids"] for x in st]) / n
                e["probes_ahead_per_host"] = med([x.get("probes_ahead", 0) for x in st]) / n
            steps = [sum(x.get("steps", {}).values()) for x in st]
            e["steps_per_host"] = med(steps) / n if steps else None
        s["|".join(map(str, key))] = e
    return s


def fmt_s(x):
    if x is None:
        return "–"
    return f"{x:.2f} s" if x < 100 else f"{x:.0f} s"


def fmt_r(x):
    """A ratio: 0.18 (1/5.6)."""
    if x is None:
        return "–"
    return f"{x:.2f}" if x >= 1 else f"{x:.3f} (1/{1 / x:.1f})" if x > 0 else "0"


def fmt_mb(x):
    return "–" if not x else f"{x:.0f} MB"


TOOL_NAMES = {"recipe": "recipe", "ansible": "Ansible", "pyinfra": "pyinfra",
              "floor": "floor: bare `ssh` (default kex)", "floor-c25519": "floor: bare `ssh` (curve25519)",
              "floor-script": "floor: one `ssh HOST 'reads'` (curve25519)"}


def tool_label(t):
    if t == DEFAULT_FORKS:
        return "recipe, default `--forks` (32 at once)"
    if "@" in t:
        return f"recipe ({t.split('@', 1)[1]})"
    return TOOL_NAMES.get(t, t)


def tool_order(names):
    rank = {"floor-c25519": 0, "floor-script": 0.5, "floor": 1, "recipe": 2, "ansible": 8, "pyinfra": 9}
    return sorted(names, key=lambda t: (rank.get(t, 3 if t.startswith("recipe@") else 10), t))


def timing_cells(e, *floors):
    """The wall time and its ratios to each floor, or why they are not published."""
    if e.get("busy") or any(f and f.get("busy") for f in floors):
        worst = max([x["load_max"] for x in (e, *floors) if x and x.get("load_max") is not None] or [0])
        return (f"not published (load {worst:.1f} > {cores()} cores)",) + ("–",) * len(floors)
    wall = f"{fmt_s(e['wall_min'])} / **{fmt_s(e['wall_med'])}**"
    return (wall,) + tuple(f"{e['wall_med'] / f['wall_med']:.2f}" if f else "–" for f in floors)


def load_cell(e):
    return "–" if e.get("load_max") is None else f"{e['load_max']:.1f}" + (" (busy)" if e.get("busy") else "")


def render(res):
    s = res["summary"]
    cfg = res["config"]
    m, v = res["machine"], res["versions"]

    def get(case, tool, n):
        return s.get(f"{case}|{tool}|{n}")

    def tools_of(case, n=None):
        return tool_order({k.split("|")[1] for k in s if k.startswith(case + "|")
                           and (n is None or k.endswith(f"|{n}"))})

    L = []
    loads = [r["load1"] for r in res["runs"] if "load1" in r]
    argv = cfg.get("argv", "--quick" if cfg.get("quick") else "")
    L.append(f"Generated by `python3 bench/bench.py{' ' + argv if argv else ''}` on "
             f"{res['date']} UTC in {res['seconds'] / 60:.0f} min; raw figures in "
             f"`bench/results/{res.get('results_name', 'latest.json')}`.")
    if res.get("reconstructed"):
        L.append("")
        L.append(res["reconstructed"])
    busy_runs = [r for r in res["runs"] if busy(r) and r["case"] != "count"]
    if busy_runs:
        L.append("")
        worst = max(load_of(r) for r in busy_runs)
        why = (f"while work other than the benchmark's used more than {OTHERS_MAX_SHARE:.0%} of the "
               f"{cores()} cores (up to {worst:.2f} cores)" if "others_load" in busy_runs[0]
               else f"with a 1-minute load average above the {cores()} cores (up to {worst:.1f})")
        L.append(f"**Not a publishable comparison:** {len(busy_runs)} of {len(res['runs'])} runs were taken {why}; "
                 "their times are left out below (marked *not published*) and no timing goal is judged from them. "
                 "Round trips and processes per host do not depend on the load. Run again on a quiet machine.")
    L.append("")
    L.append("**Machine and tools**")
    L.append("")
    L.append("| | |")
    L.append("|---|---|")
    L.append(f"| CPU | {m.get('cpu', '?')}, {m.get('cores')} cores ({m.get('virtualization')}) |")
    L.append(f"| memory | {m.get('memory_gib')} GiB |")
    L.append(f"| OS | {m.get('os', '?')}, kernel {m.get('kernel')} |")
    others = [r["others_load"] for r in res["runs"] if "others_load" in r]
    if others:
        L.append(f"| other work during the runs | {min(others):.2f}–{max(others):.2f} cores (median "
                 f"{med(others):.2f}) of CPU used by processes that are not the benchmark's; a run is "
                 f"published only below {OTHERS_MAX_SHARE * cores():.2f} |")
    if loads:
        L.append(f"| load average | 1-min load average before each run {min(loads):.1f}–{max(loads):.1f} "
                 f"(median {med(loads):.1f}): at scale mostly the benchmark's own processes |")
    L.append(f"| OpenSSH | {v.get('openssh')} |")
    L.append(f"| recipe | {v.get('recipe')} |")
    for label, path in sorted(v.get("recipe_variants", {}).items()):
        L.append(f"| recipe ({label}) | {path} |")
    L.append(f"| Ansible | {v.get('ansible')}: pipelining on, forks = host count, fresh connections each run |")
    L.append(f"| pyinfra | {v.get('pyinfra')}: `-y --parallel` = host count |")
    L.append(f"| Python | {v.get('python')} (controller) |")
    L.append("")
    goals = []
    nh = len(SANDBOX_HOSTS)
    cases1 = ("first", "idempotent", "one-changed", "dry-run")
    tools1 = tools_of("idempotent", nh)
    if tools1:
        L.append(f"#### Case 1: the munge step on {nh} sandbox hosts")
        L.append("")
        L.append(f"systemd-nspawn hosts (Debian 12) from `recipe sandbox up`: {cfg.get('sandbox_reps')} fresh "
                 f"sandbox(es) per tool, {cfg.get('sandbox_k')} run(s) of each later case on each. "
                 "Wall time of the whole command, min / **median**; ratio = recipe's median / the other's.")
        L.append("")
        hdr = ["case"] + [tool_label(t) for t in tools1]
        others = [t for t in tools1 if t in ("ansible", "pyinfra")]
        hdr += [f"recipe / {tool_label(t)}" for t in others]
        L.append("| " + " | ".join(hdr) + " |")
        L.append("|" + "---|" * len(hdr))
        for case in cases1:
            e = {t: get(case, t, nh) for t in tools1}
            row = [case] + [timing_cells(e[t])[0] if e[t] else "–" for t in tools1]
            row += [fmt_r(e["recipe"]["wall_med"] / e[t]["wall_med"])
                    if e.get("recipe") and e[t] and not e["recipe"]["busy"] and not e[t]["busy"] else "–"
                    for t in others]
            L.append("| " + " | ".join(row) + " |")
        L.append("")
        L.append("Per run, medians: controller CPU (user+system of every process), peak RSS of the largest "
                 "process, SSH sessions (channels that ran a command, sftp included) per host from the "
                 "hosts' sshd logs, and the changes each tool reported in all.")
        L.append("")
        hdr = ["case", "tool", "controller CPU", "peak RSS", "sessions / host", "changes reported"]
        L.append("| " + " | ".join(hdr) + " |")
        L.append("|" + "---|" * len(hdr))
        for case in cases1:
            for t in tools1:
                e = get(case, t, nh)
                if not e:
                    continue
                rss = fmt_mb(e["rss_med"])
                if t == "ansible":
                    rss += f" (all processes: {fmt_mb(e['tree_rss_med'])})"
                ses = e.get("sessions_per_host")
                L.append(f"| {case} | {tool_label(t)} | {fmt_s(e['cpu_med'])} | {rss} | "
                         f"{'–' if ses is None else f'{ses:.1f}'} | {e['changed_med']:.0f} |")
        L.append("")
        a, p = get("idempotent", "ansible", nh), get("idempotent", "pyinfra", nh)
        if (a and a.get("busy")) or (p and p.get("busy")):
            a = p = None   # taken under load: not judged
        for t in [x for x in tools1 if x.startswith("recipe")]:
            r = get("idempotent", t, nh)
            if r and r.get("busy"):
                continue
            sfx = "" if t == "recipe" else f" [{tool_label(t)}]"
            if r and p:
                goals.append((f"idempotent re-run ≤ 1/5 of pyinfra's time (case 1){sfx}",
                              f"{fmt_s(r['wall_med'])} vs {fmt_s(p['wall_med'])}: {fmt_r(r['wall_med'] / p['wall_med'])}",
                              r["wall_med"] <= p["wall_med"] / 5))
            if r and a:
                goals.append((f"idempotent re-run ≤ 1/20 of Ansible's time (case 1){sfx}",
                              f"{fmt_s(r['wall_med'])} vs {fmt_s(a['wall_med'])}: {fmt_r(r['wall_med'] / a['wall_med'])}",
                              r["wall_med"] <= a["wall_med"] / 20))
        r = get("idempotent", "recipe", nh)
        if r and "round_trips_per_host" in r:
            ok = r["round_trips_per_host"] <= r["steps_per_host"] and r["channels_per_host"] <= 1
            goals.append(("≤ 1 round trip per unchanged step, no new channel per step (case 1)",
                          f"{r['round_trips_per_host']:.0f} round trips for {r['steps_per_host']:.0f} steps, "
                          f"{r['channels_per_host']:.0f} channel per host", ok))
    sizes = sorted({int(k.split("|")[2]) for k in s if k.startswith("scale|")})
    if sizes:
        L.append("#### Case 2: the idempotent check against N hosts on one local sshd")
        L.append("")
        L.append(f"`{scale_addr(1)}`.. (254 addresses per /24, as many /24s as needed) served by one sshd configuration, each host under its "
                 f"own folder (`{SCALE_BASE}/<tool>/hN`); the file-only variant of the step (3 packages checked read-only, 2 folders, the "
                 f"key, the options file). {cfg.get('scale_reps')} run(s) of each, interleaved. The floors are N "
                 "`ssh HOST true` started at once with OpenSSH's client: with its default key exchange "
                 "(sntrup761x25519, ~100 ms of CPU per connection on this machine) and with curve25519-sha256, "
                 "the one recipe negotiates, which is the like-for-like floor. Controller, sshd and target "
                 "commands all share the same 2 cores here. Ansible's modules run Python on the target, "
                 "so its sshd CPU is mostly the target's work.")
        L.append("")
        L.append("The one-script floor runs, in one `ssh HOST 'script'` per host, every read the step makes "
                 "(the package query, `stat` of the folders and files, `sha256sum` of the files): the "
                 "physical limit of an agentless tool that really checks state.")
        L.append("")
        def counted_pids(t):
            t = "recipe" if t == DEFAULT_FORKS else t
            c = next((e for k, e in s.items() if k.startswith(f"count|{t}|")), None)
            if c is None or "remote_pids_per_host" not in c:
                return "–"
            return f"{c['remote_pids_per_host']:.1f}"

        if any(k.startswith("count|") for k in s):
            n0 = min(int(k.split("|")[2]) for k in s if k.startswith("count|"))
            L.append(f"Remote processes per host: what the tool's commands start on a host (its login "
                     f"shell not included), counted in a separate run at {n0} hosts, one host at a time, "
                     "from how far the host's last pid moved while they ran: with every host at once that "
                     "counter, which is the machine's, would count the other hosts' processes too. Recipe "
                     "counts its own (`RECIPE_STATS`); the one-script floor's reads are bracketed the same way.")
            L.append("")
        hdr = ["hosts", "tool", "wall min / median", "× floor (curve25519)", "× one-script floor",
               "× floor (default)", "sessions / host", "round trips / host", "remote processes / host",
               "controller CPU", "peak RSS", "RSS / host", "sshd CPU", "load"]
        L.append("| " + " | ".join(hdr) + " |")
        L.append("|" + "---|" * len(hdr))
        for n in sizes:
            fc, fd, fs = (get("scale", f, n) for f in ("floor-c25519", "floor", "floor-script"))
            for t in tools_of("scale", n):
                e = get("scale", t, n)
                wall, rc, rs, rd = timing_cells(e, fc, fs, fd)
                ses = e.get("sessions_per_host")
                ses = "–" if ses is None else f"{ses:.0f}"
                rt = (f"{e['round_trips_per_host']:.0f} ({e['steps_per_host']:.0f} steps)"
                      if "round_trips_per_host" in e else "–")
                pids = counted_pids(t)
                rss = fmt_mb(e["rss_med"])
                per = "–"
                if t == "ansible" or t.startswith("floor"):
                    rss += f" (all: {fmt_mb(e['tree_rss_med'])})"
                else:
                    per = f"{e['rss_med'] * 1024 / n:.0f} KB"
                L.append(f"| {n} | {tool_label(t)} | {wall} | {rc} | {rs} | {rd} | {ses} | {rt} | {pids} | "
                         f"{fmt_s(e['cpu_med'])} | {rss} | {per} | {fmt_s(e.get('server_cpu_med'))} | {load_cell(e)} |")
        L.append("")
        conv = [(k.split("|")[1], int(k.split("|")[2]), e) for k, e in s.items() if k.startswith("converge|")]
        if conv:
            L.append("The first converge of the same hosts (one run each, before the timed checks: it creates "
                     "the folders and files, so it writes and diffs more than the check):")
            L.append("")
            L.append("| hosts | tool | wall | controller CPU | peak RSS | RSS / host |")
            L.append("|---|---|---|---|---|---|")
            for t, n, e in sorted(conv, key=lambda x: (x[1], tool_order([x[0]]))):
                wall = fmt_s(e["wall_med"]) if not e.get("busy") else timing_cells(e)[0]
                L.append(f"| {n} | {tool_label(t)} | {wall} | {fmt_s(e['cpu_med'])} | "
                         f"{fmt_mb(e['rss_max'])} | {e['rss_max'] * 1024 / n:.0f} KB |")
            L.append("")
        nmax = max(sizes)
        for t in [x for x in tools_of("scale", nmax) if x.startswith("recipe")]:
            r, fc = get("scale", t, nmax), get("scale", "floor-c25519", nmax)
            sfx = "" if t == "recipe" else f" [{tool_label(t)}]"
            # The goals of issue 13 at 1,000 hosts; the earlier ones below that.
            big = nmax >= 1000
            ratio, mem = (1.25, 200) if big else (1.5, 100)
            quiet = r and fc and not r.get("busy") and not fc.get("busy")
            fs = get("scale", "floor-script", nmax)
            if r and fs and quiet and not fs.get("busy") and big:
                goals.append((f"at {nmax} hosts, idempotent check ≤ 1.10 × the one-script floor{sfx}",
                              f"{fmt_s(r['wall_med'])} vs {fmt_s(fs['wall_med'])}: "
                              f"{r['wall_med'] / fs['wall_med']:.2f} ×", r["wall_med"] <= 1.10 * fs["wall_med"]))
            if r and fc and not quiet:
                goals.append((f"at {nmax} hosts, idempotent check ≤ {ratio} × the bare-connection floor{sfx}",
                              f"not judged: load {max(r['load_max'] or 0, fc['load_max'] or 0):.1f} > {cores()} cores", False))
            if quiet:
                goals.append((f"at {nmax} hosts, idempotent check ≤ {ratio} × the bare-connection floor{sfx}",
                              f"{fmt_s(r['wall_med'])} vs {fmt_s(fc['wall_med'])} (curve25519 floor): "
                              f"{r['wall_med'] / fc['wall_med']:.2f} ×", r["wall_med"] <= ratio * fc["wall_med"]))
            if r and "round_trips_per_host" in r and not any(g[0].startswith("≤ 1 round trip") for g in goals):
                ok = r["round_trips_per_host"] <= r["steps_per_host"] and r["channels_per_host"] <= 1
                goals.append((f"≤ 1 round trip per unchanged step, no new channel per step ({nmax} hosts)",
                              f"{r['round_trips_per_host']:.0f} round trips for {r['steps_per_host']:.0f} steps, "
                              f"{r['channels_per_host']:.0f} channel per host", ok))
            if r:
                goals.append((f"controller peak RSS < {mem} MB at {nmax} hosts{sfx}",
                              f"{r['rss_max']:.0f} MB (largest of {r['n']} runs)", r["rss_max"] < mem))
            c = get("converge", t, nmax)
            if c and big:
                goals.append((f"controller peak RSS < {mem} MB at {nmax} hosts, first converge{sfx}",
                              f"{c['rss_max']:.0f} MB", c["rss_max"] < mem))
        n0 = min(sizes)
        r0, p0, a0 = (get("scale", t, n0) for t in ("recipe", "pyinfra", "ansible"))
        if any(x and x.get("busy") for x in (r0, p0, a0)):
            r0 = None   # taken under load: not judged
        if r0 and p0 and not any("pyinfra's time" in g[0] for g in goals):
            goals.append((f"idempotent re-run ≤ 1/5 of pyinfra's time ({n0} local hosts)",
                          fmt_r(r0["wall_med"] / p0["wall_med"]), r0["wall_med"] <= p0["wall_med"] / 5))
        if r0 and a0 and not any("Ansible's time" in g[0] for g in goals):
            goals.append((f"idempotent re-run ≤ 1/20 of Ansible's time ({n0} local hosts)",
                          fmt_r(r0["wall_med"] / a0["wall_med"]), r0["wall_med"] <= a0["wall_med"] / 20))
    lat = [k for k in s if k.startswith("latency|")]
    if lat:
        ln = int(lat[0].split("|")[2])
        d = next((r.get("delay_ms") for r in res["runs"] if r["case"] == "latency"), None)
        L.append(f"#### Case 4: a slow link ({ln} hosts, {d} ms added each way)")
        L.append("")
        L.append(f"The idempotent check of case 2 on {ln} hosts, every byte through a forwarder "
                 f"(`bench/delay.py`) that adds {d} ms in each direction (a {2 * d} ms round trip, as to another "
                 "site or cloud region); the three floors through the same forwarder, all interleaved.")
        L.append("")
        hdr = ["tool", "wall min / median", "× one-script floor", "× floor (curve25519)", "round trips / host",
               "sessions / host", "load"]
        L.append("| " + " | ".join(hdr) + " |")
        L.append("|" + "---|" * len(hdr))
        fs, fc = get("latency", "floor-script", ln), get("latency", "floor-c25519", ln)
        for t in tools_of("latency", ln):
            e = get("latency", t, ln)
            wall, rs, rc = timing_cells(e, fs, fc)
            rt = f"{e['round_trips_per_host']:.0f}" if "round_trips_per_host" in e else "–"
            ses = e.get("sessions_per_host")
            L.append(f"| {tool_label(t)} | {wall} | {rs} | {rc} | {rt} | {'–' if ses is None else f'{ses:.0f}'} | "
                     f"{load_cell(e)} |")
        L.append("")
        r = get("latency", "recipe", ln)
        if r and fs:
            if r.get("busy") or fs.get("busy"):
                goals.append((f"at {2 * d} ms RTT, idempotent check ≤ 1.15 × the one-script floor",
                              f"not judged: load above {cores()} cores", False))
            else:
                goals.append((f"at {2 * d} ms RTT, idempotent check ≤ 1.15 × the one-script floor",
                              f"{fmt_s(r['wall_med'])} vs {fmt_s(fs['wall_med'])}: {r['wall_med'] / fs['wall_med']:.2f} ×",
                              r["wall_med"] <= 1.15 * fs["wall_med"]))
    sh_n = cfg.get("shell_hosts")
    if sh_n and any(k.startswith("shell|") for k in s):
        L.append(f"#### Root's real login shell ({sh_n} hosts)")
        L.append("")
        L.append("The same check on the same sshd, but the sessions keep root's real HOME, whose `~/.bashrc` "
                 "runs `pyenv init` (about 100 processes) in every shell sshd starts, that is once per "
                 f"channel. Medians of {cfg.get('scale_reps')} runs (Ansible: one run): what each tool pays "
                 "per channel.")
        L.append("")
        L.append("| tool | wall, root's shell | wall, empty HOME (median above) | sessions / host | sshd CPU |")
        L.append("|---|---|---|---|---|")
        for t in tools_of("shell", sh_n):
            e, base = get("shell", t, sh_n), get("scale", t, sh_n)
            ses = e.get("sessions_per_host")
            w = fmt_s(e["wall_med"]) if not e.get("busy") else timing_cells(e)[0]
            wb = "–" if not base else fmt_s(base["wall_med"]) if not base.get("busy") else "not published"
            L.append(f"| {tool_label(t)} | {w} | {wb} | "
                     f"{'–' if ses is None else f'{ses:.0f}'} | {fmt_s(e.get('server_cpu_med'))} |")
        L.append("")
    if goals:
        L.append("#### Goals, as ratios measured in this run")
        L.append("")
        L.append("| goal | measured | met |")
        L.append("|---|---|---|")
        for g, msr, ok in goals:
            L.append(f"| {g} | {msr} | {'not judged' if msr.startswith('not judged') else 'yes' if ok else '**no**'} |")
        L.append("")
    bad = [r for r in res["runs"] if r.get("problem") and r["case"] not in ("converge", "warmup")]
    if bad:
        L.append("Runs left out of the tables because a tool reported a problem:")
        L.append("")
        for r in bad:
            L.append(f"- {r['case']}, {tool_label(r['tool'])}, {r['hosts']} hosts: {r['problem']}")
        L.append("")
    return "\n".join(L)


def write_svg(res, path, metric="wall_med", ylabel="idempotent check, median wall (s)"):
    """A small line chart of case 2: a median (wall time, peak RSS) against the number of hosts."""
    s = res["summary"]
    sizes = sorted({int(k.split("|")[2]) for k in s if k.startswith("scale|")})
    if len(sizes) < 2:
        return False
    series = {}
    for k, e in s.items():
        case, tool, n = k.split("|")
        if case == "scale" and (metric == "wall_med" or not tool.startswith("floor")):
            series.setdefault(tool, []).append((int(n), e[metric]))
    # A tool measured at one size only (Ansible) would flatten everything else: left out.
    series = {t: pts for t, pts in series.items() if len(pts) > 1}
    W, H, ml, mr, mt, mb = 720, 400, 60, 250, 20, 45
    xmax = max(sizes)
    ymax = max(v for pts in series.values() for _, v in pts) * 1.05
    X = lambda n: ml + (W - ml - mr) * n / xmax
    Y = lambda v: H - mb - (H - mt - mb) * v / ymax
    colors = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<line x1="{ml}" y1="{H - mb}" x2="{W - mr}" y2="{H - mb}" stroke="black"/>',
           f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{H - mb}" stroke="black"/>',
           f'<text x="{(ml + W - mr) / 2}" y="{H - 8}" text-anchor="middle">hosts (one local sshd)</text>',
           f'<text x="14" y="{(mt + H - mb) / 2}" transform="rotate(-90 14 {(mt + H - mb) / 2})" '
           f'text-anchor="middle">{ylabel}</text>']
    for n in sizes:
        out.append(f'<text x="{X(n):.0f}" y="{H - mb + 16}" text-anchor="middle">{n}</text>')
    step = 1 if ymax < 8 else 2 if ymax < 20 else 5 if ymax < 50 else 20 if ymax < 200 else 100
    v = 0
    while v <= ymax:
        out.append(f'<text x="{ml - 6}" y="{Y(v) + 4:.0f}" text-anchor="end">{v}</text>')
        out.append(f'<line x1="{ml}" y1="{Y(v):.0f}" x2="{W - mr}" y2="{Y(v):.0f}" stroke="#eee"/>')
        v += step
    for i, t in enumerate(tool_order(series)):
        pts = sorted(series[t])
        c = colors[i % len(colors)]
        dash = ' stroke-dasharray="5,4"' if t.startswith("floor") else ""
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="'
                   + " ".join(f"{X(n):.0f},{Y(w):.0f}" for n, w in pts) + '"/>')
        for n, w in pts:
            out.append(f'<circle cx="{X(n):.0f}" cy="{Y(w):.0f}" r="3" fill="{c}"/>')
        ly = mt + 10 + 18 * i
        out.append(f'<line x1="{W - mr + 15}" y1="{ly}" x2="{W - mr + 40}" y2="{ly}" stroke="{c}" stroke-width="2"{dash}/>')
        label = tool_label(t).replace("`", "")
        out.append(f'<text x="{W - mr + 46}" y="{ly + 4}">{label}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return True


MARKERS = ("<!-- BEGIN GENERATED by bench/bench.py -->", "<!-- END GENERATED -->")


def write_doc(res, doc=DOC, section=None):
    """Rewrites the generated part of `doc`; with `section`, its own part (and charts) instead,
    so that a scale-only run sits beside the full comparison."""
    gen = render(res)
    name = f"{section}.svg" if section else SVG_NAME
    same = os.path.abspath(doc) == os.path.abspath(DOC)
    svg = os.path.join(BENCH, "results", name) if same else os.path.join(os.path.dirname(os.path.abspath(doc)), name)
    BEGIN, END = MARKERS
    if section:
        BEGIN, END = BEGIN.replace(" -->", f" ({section}) -->"), END.replace(" -->", f" ({section}) -->")
    rss_svg = svg[:-len(".svg")] + "-rss.svg"
    if write_svg(res, svg):
        link = os.path.relpath(svg, os.path.dirname(os.path.abspath(doc)))
        charts = f"![median wall time against hosts]({link})\n\n"
        if write_svg(res, rss_svg, "rss_med", "controller peak RSS, median (MB)"):
            charts += f"![controller peak RSS against hosts]({os.path.relpath(rss_svg, os.path.dirname(os.path.abspath(doc)))})\n\n"
        gen = gen.replace("#### Case 2: the idempotent check against N hosts on one local sshd\n",
                          "#### Case 2: the idempotent check against N hosts on one local sshd\n\n" + charts +
                          "(Tools measured at one size only, Ansible, are left out of the charts.)\n", 1)
    text = open(doc).read() if os.path.exists(doc) else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    pre, rest = text.split(BEGIN, 1)
    post = rest.split(END, 1)[1] if END in rest else ""
    with open(doc, "w") as f:
        f.write(pre + BEGIN + "\n" + gen + "\n" + END + post)
    log(f"wrote {doc}")


# ---------------------------------------------------------------------------------------------


LOG_LINE = re.compile(r"^\[bench (\d\d:\d\d:\d\d)\] (\S+)\s+(\S+)\s+(\d+) hosts\s+([\d.]+) s\s+cpu\s+([\d.]+) s"
                      r"(?:\s+rss\s+([\d.]+) MB\s+changed (\d+))?(.*)$")


def from_log(path, args):
    """The results of a run rebuilt from the lines `Bench.run` and `Bench.floor` log."""
    runs = []
    for line in open(path, errors="replace"):
        m = LOG_LINE.match(line.rstrip("\n"))
        if not m:
            continue
        _, case, tool, n, wall, cpu, rss, changed, rest = m.groups()
        problem = rest.split("PROBLEM: ", 1)[1].strip() if "PROBLEM: " in rest else None
        runs.append({"case": case, "tool": tool, "hosts": int(n), "wall": float(wall), "cpu": float(cpu),
                     "peak_rss_mb": float(rss) if rss else 0.0, "tree_rss_mb": 0.0,
                     "changed": int(changed) if changed else 0, "problem": problem, "per_host": {}})
    tools = sorted({r["tool"] for r in runs if not r["tool"].startswith("floor")})
    variants = dict(spec.partition("=")[::2] for spec in args.recipe_bin)
    res = {
        "date": datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "versions": dict(tool_versions(), recipe_variants=variants),
        "config": {"argv": " ".join(shlex.quote(a) for a in sys.argv[1:] if not a.startswith("--from-log")
                                    and a != args.from_log),
                   "quick": args.quick, "scale_reps": args.reps or (1 if args.quick else 3),
                   "shell_hosts": 0, "tools": tools},
        "seconds": 0,
        "runs": runs,
        "results_name": os.path.basename(args.results),
        "reconstructed": (f"This run ended before it wrote its results (the script failed on a missing tool's "
                          f"version after the last measurement); the figures were rebuilt from its log "
                          f"(`bench/results/{os.path.basename(path)}`) with `--from-log`: wall time, controller "
                          f"CPU, peak RSS and changes are the measured ones; sessions, round trips, sshd CPU "
                          f"and the load average were not in the log and show as –."),
    }
    t = [datetime.datetime.strptime(x.split("]")[0][7:], "%H:%M:%S") for x in open(path) if x.startswith("[bench ")]
    if len(t) > 1:
        res["seconds"] = (t[-1] - t[0]).total_seconds()
    res["summary"] = summarize(runs)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repetition, 10 scale hosts")
    ap.add_argument("--no-sandbox", action="store_true", help="skip case 1 (the sandbox hosts)")
    ap.add_argument("--no-scale", action="store_true", help="skip case 2 (the local sshd)")
    ap.add_argument("--no-default-forks", action="store_true",
                    help="case 2 without the row of recipe at its default --forks")
    ap.add_argument("--scale", default=None, help="host counts of case 2 (default 10,50,100)")
    ap.add_argument("--tools", default=",".join(TOOLS), help="tools to run (default: all three)")
    ap.add_argument("--recipe-bin", action="append", default=[], metavar="LABEL=PATH",
                    help="also time this recipe binary, as tool recipe@LABEL (before/after comparisons)")
    ap.add_argument("--report-only", action="store_true", help="re-render docs/performance.md from the results file")
    ap.add_argument("--results", default=RESULTS, help="where the raw results go")
    ap.add_argument("--doc", default=DOC, help="the Markdown file whose generated part is rewritten")
    ap.add_argument("--section", default=None,
                    help="write into the generated part named SECTION (added at the end if missing), not the main one")
    ap.add_argument("--from-log", metavar="LOG", default=None,
                    help="rebuild the results of a run that died before writing them from its log (wall, CPU, "
                         "peak RSS and changes only), with the other options as that run had them")
    ap.add_argument("--reps", type=int, default=None, help="repetitions of each scale run (default 3, 1 with --quick)")
    ap.add_argument("--latency-ms", type=float, default=25,
                    help="case 3: delay added each way by a forwarder (default 25, a 50 ms round trip; 0 skips it)")
    ap.add_argument("--latency-hosts", type=int, default=3, help="case 3: hosts behind the forwarder (default 3)")
    args = ap.parse_args()

    if args.from_log:
        res = from_log(args.from_log, args)
        os.makedirs(os.path.dirname(args.results), exist_ok=True)
        with open(args.results, "w") as f:
            json.dump(res, f, indent=1)
        write_doc(res, args.doc, args.section)
        return
    if args.report_only:
        res = json.load(open(args.results))
        res["summary"] = summarize(res["runs"])
        write_doc(res, args.doc, args.section)
        return
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (sandbox hosts, a private sshd on loopback)")
    global CG
    CG = Cgroups()
    if not CG.ok:
        CG = None
        log("no cpuacct cgroup: CPU time counts only the processes each tool waited for, "
            "and the load is judged by the load average")
    else:
        # This script and all it starts count as the benchmark's own work (see `measure`).
        with open(os.path.join(CG.new("bench"), "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    tools = [t for t in args.tools.split(",") if t]
    for spec in args.recipe_bin:
        label, _, path = spec.partition("=")
        RECIPE_BINS[f"recipe@{label}"] = os.path.abspath(path)
        tools.append(f"recipe@{label}")
    sizes = sorted(int(x) for x in (args.scale or ("10" if args.quick else "10,50,100")).split(","))
    cfg = {"argv": " ".join(shlex.quote(a) for a in sys.argv[1:]), "quick": args.quick, "sandbox_reps": 1 if args.quick else 2, "sandbox_k": 1 if args.quick else 3,
           "scale_reps": args.reps or (1 if args.quick else 3), "shell_hosts": 0 if args.quick else 10, "tools": tools}
    os.makedirs(WORK, exist_ok=True)
    shutil.rmtree(os.path.join(WORK, "runs"), ignore_errors=True)
    venv_setup(tools)
    build_recipe()
    key = os.path.join(WORK, "id_ed25519")
    if not os.path.exists(key):
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
    mk = os.path.join(WORK, "munge.key")
    if not os.path.exists(mk):
        with open(mk, "wb") as f:
            f.write(secrets.token_bytes(1024))
        os.chmod(mk, 0o600)
    b = Bench(args)
    t0 = time.time()
    try:
        if not args.no_scale:
            if "ansible" in tools and sh("dpkg -s python3-apt", check=False).returncode != 0:
                log("python3-apt is missing here: Ansible's apt module would install it, so Ansible skips case 2")
                tools_scale = [t for t in tools if t != "ansible"]
            else:
                tools_scale = tools
            case_scale(b, sizes, cfg["scale_reps"], tools_scale, cfg["shell_hosts"],
                       default_forks=not args.no_default_forks)
            if args.latency_ms > 0:
                case_latency(b, args.latency_ms, args.latency_hosts, cfg["scale_reps"], tools_scale)
        if not args.no_sandbox:
            case_sandbox(b, cfg["sandbox_reps"], cfg["sandbox_k"], tools)
    finally:
        if CG and CG.ok:
            try:
                os.rmdir(CGROUP_ROOT)
            except OSError:
                pass
    res = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "versions": dict(tool_versions(), recipe_variants={k.split("@", 1)[1]: v for k, v in RECIPE_BINS.items()}),
        "config": cfg,
        "seconds": time.time() - t0,
        "runs": b.runs,
    }
    res["summary"] = summarize(b.runs)
    res["results_name"] = os.path.basename(args.results)
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w") as f:
        json.dump(res, f, indent=1)
    write_doc(res, args.doc, args.section)
    log(f"done in {res['seconds'] / 60:.1f} min")
    busy_runs = [r for r in b.runs if busy(r)]
    if busy_runs:
        log(f"NOTICE: {len(busy_runs)} of {len(b.runs)} runs were taken under other work above the limit "
            f"(up to {max(load_of(r) for r in busy_runs):.1f}): their times are marked 'not published' in "
            f"{args.doc}; this is not a comparison to publish. Run again on a quiet machine.")


if __name__ == "__main__":
    main()
