"""Benchmark twin of recipes/bench_munge.rhai (see bench/README.md): the seed's munge step.

    pyinfra -y --parallel <hosts> inventory.py munge.py
"""

import os

from pyinfra import host
from pyinfra.operations import apt, files, systemd
from pyinfra.operations.util import any_changed

# Same variables and defaults as recipes/bench_munge.rhai; the inventory overrides them.
base = host.data.get("base", "")
owner = host.data.get("owner", "munge")
service = host.data.get("service", "munge")
template = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "templates",
                        "bench_munge.default.j2")

apt.packages(
    name="Packages present",
    packages=host.data.get("packages", ["munge", "libmunge-dev", "libmunge2"]),
)
files.directory(
    name="Log folder owned by munge",
    path=f"{base}/var/log/munge", user=owner, group=owner, mode="0700",
)
files.directory(
    name="Key folder",
    path=f"{base}/etc/munge", user=owner, group=owner, mode="0700",
)
key = files.put(
    name="Key from the controller",
    src=host.data.get("key_src", "munge.key"),
    dest=f"{base}/etc/munge/munge.key", user=owner, group=owner, mode="0400",
)
options = files.template(
    name="Options file",
    src=template,
    dest=f"{base}/etc/default/munge", mode="0644",
    munge_options=host.data.get("munge_options", "--num-threads=2"),
)
if service:
    systemd.service(
        name="munged started and enabled",
        service=service, running=True, enabled=True,
    )
    systemd.service(
        name="Restart munged",
        service=service, restarted=True,
        _if=any_changed(key, options),
    )
else:
    files.file(
        name="Restart marker",
        path=f"{base}/restarted", touch=True,
        _if=any_changed(key, options),
    )
