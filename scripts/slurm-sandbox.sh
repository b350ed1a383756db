#!/bin/sh
# Boots a 3-host sandbox (master, w1, w2) and runs all of seed Part 1 on it with
# recipes/cluster.rhai: MUNGE, Slurm (built once on the master, or Debian's packages),
# slurmctld, slurmd, then the check (sinfo: partition up, workers idle; srun -N2 hostname).
#
#   scripts/slurm-sandbox.sh [source|packages] [extra `recipe run` arguments...]
#
# Environment: RECIPE (the recipe binary; default `recipe` on PATH, else
# ./target/debug/recipe), SANDBOX (sandbox name, default slurm), HOSTS (default
# master,w1,w2). Remove the hosts with: recipe sandbox down --name slurm
set -eu
cd "$(dirname "$0")/.."
mode=${1:-source}
[ $# -gt 0 ] && shift
case "$mode" in source|packages) ;; *) echo "usage: $0 [source|packages] [recipe run args...]" >&2; exit 2;; esac
if [ -z "${RECIPE:-}" ]; then
    if command -v recipe >/dev/null 2>&1; then RECIPE=recipe; else RECIPE=./target/debug/recipe; fi
fi
name=${SANDBOX:-slurm}
src=$(scripts/fetch-slurm-source.sh)
"$RECIPE" sandbox up --name "$name" --hosts "${HOSTS:-master,w1,w2}" --serve "$(dirname "$src")"
inv=/var/lib/recipe/sandbox/$name/inventory.toml
url=$(sed -n 's/^sandbox_files_url *= *"\(.*\)"/\1/p' "$inv")
exec "$RECIPE" run cluster.rhai -i "$inv" --var "slurm_install=$mode" \
    --var "slurm_url=$url/slurm-wlm_{version}.orig.tar.gz" \
    --var slurm_proctrack_type=proctrack/linuxproc --var slurm_task_plugin=task/none "$@"
