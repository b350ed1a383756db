#!/bin/sh
# Boots a 3-host sandbox (master, w1, w2) and runs the whole cluster procedure on it with
# recipes/cluster.rhai: MUNGE, Slurm (built once on the master, or Debian's packages),
# slurmctld, slurmd, the check (sinfo: partition up, workers idle; srun -N2 hostname), and
# on Debian 13 also Apptainer on every node and the sample container jobs.
#
#   scripts/slurm-sandbox.sh [source|packages] [extra `recipe run` arguments...]
#
# Environment: RECIPE (the recipe binary; default `recipe` on PATH, else
# ./target/debug/recipe), SANDBOX (sandbox name, default slurm), HOSTS (default
# master,w1,w2), RELEASE (bookworm or trixie, default bookworm; trixie adds Apptainer and
# the sample container jobs, since no Debian 12 package of Apptainer exists).
# Remove the hosts with: recipe sandbox down --name slurm
set -eu
cd "$(dirname "$0")/.."
mode=${1:-source}
[ $# -gt 0 ] && shift
case "$mode" in source|packages) ;; *) echo "usage: $0 [source|packages] [recipe run args...]" >&2; exit 2;; esac
if [ -z "${RECIPE:-}" ]; then
    if command -v recipe >/dev/null 2>&1; then RECIPE=recipe; else RECIPE=./target/debug/recipe; fi
fi
name=${SANDBOX:-slurm}
release=${RELEASE:-bookworm}
# One folder served to the hosts, as a site's mirror would be: Slurm's tarball (and the
# Apptainer release package on Debian 13).
files=/var/cache/recipe/serve-$release
mkdir -p "$files"
echo "fetching Slurm's source for $release (Debian's source package; cached)" >&2
src=$(SLURM_SRC_SUITE=$release scripts/fetch-slurm-source.sh)
ln -f "$src" "$files/" 2>/dev/null || cp -f "$src" "$files/"
tarball=$(basename "$src")
# The sha256 the suite's signed Sources index gave (fetch-listed.sh): every file served is pinned.
slurm_sha=$(cat "$src.sha256")
version=${tarball#slurm-wlm_}
version=${version%%.orig.tar.*}
if [ "$release" = trixie ]; then
    echo "fetching Apptainer's release package (Debian unstable; cached)" >&2
    deb=$(scripts/fetch-apptainer-deb.sh)
    ln -f "$deb" "$files/" 2>/dev/null || cp -f "$deb" "$files/"
    debname=$(basename "$deb" .deb)
    app_version=$(echo "$debname" | cut -d_ -f2)
    app_sha=$(cat "$deb.sha256")
fi
"$RECIPE" sandbox up --name "$name" --release "$release" --hosts "${HOSTS:-master,w1,w2}" --serve "$files"
inv=/var/lib/recipe/sandbox/$name/inventory.toml
url=$(sed -n 's/^sandbox_files_url *= *"\(.*\)"/\1/p' "$inv")
proxy=$(sed -n 's/^sandbox_proxy *= *"\(.*\)"/\1/p' "$inv")
# The site's settings go into the inventory's [vars], as on a real site: every recipe that
# cluster.rhai plays reads them from there.
site=/var/lib/recipe/sandbox/$name/site.toml
{
    echo "# The sandbox's inventory plus this cluster's settings (scripts/slurm-sandbox.sh)."
    sed -n '1,/^\[vars\]/p' "$inv"
    echo "slurm_install = \"$mode\""
    echo "slurm_version = \"$version\""
    echo "slurm_url = \"$url/slurm-wlm_{version}.orig.tar.gz\""
    echo "slurm_sha256 = \"$slurm_sha\"   # from Debian's signed $release Sources index"
    echo "slurm_proctrack_type = \"proctrack/linuxproc\"   # containers cannot use the cgroup plugins"
    echo "slurm_task_plugin = \"task/none\""
    if [ "$release" = trixie ]; then
        echo "singularity = true"
        echo "singularity_install = \"package_url\""
        echo "singularity_version = \"$app_version\""
        echo "singularity_package_url = \"$url/apptainer_{version}_{arch}.deb\""
        echo "singularity_package_sha256 = \"$app_sha\"   # from Debian's signed sid Packages index"
        echo "container_build_proxy = \"$proxy\""
    fi
    sed -n '/^\[vars\]/,$p' "$inv" | sed 1d
} > "$site"
echo "site inventory: $site" >&2
if [ "$mode" = source ]; then
    echo "building Slurm $version from source on the master (about 5 minutes on 2 cores); each step prints a line when it ends, and on a terminal the bottom lines show the steps under way (make: the file it compiles)" >&2
fi
exec "$RECIPE" run cluster.rhai -i "$site" "$@"
