#!/bin/sh
# Fetches Apptainer's .deb from Debian's unstable suite into a cache folder, the way an
# air-gapped site mirrors an upstream release package; no Debian release ships it yet.
#
#   scripts/fetch-apptainer-deb.sh [CACHE_DIR]      (default /var/cache/recipe/apptainer)
#
# Idempotent: does nothing when a .deb is already there. Uses its own apt lists and
# sources (nothing in /etc/apt is changed); unstable's Release file may be past its
# Valid-Until date, which is not checked here. Prints the .deb's path on stdout. The
# .deb needs libc6 >= 2.38: it installs on Debian 13 (trixie) hosts, not on Debian 12.
# Serve CACHE_DIR to the hosts (`recipe sandbox up --serve CACHE_DIR`) and point
# singularity.rhai's singularity_package_url at it.
set -eu
dir=${1:-/var/cache/recipe/apptainer}
suite=${APPTAINER_SUITE:-sid}
mirror=${APPTAINER_MIRROR:-http://deb.debian.org/debian}
arch=$(dpkg --print-architecture)
mkdir -p "$dir"
existing=$(ls "$dir"/apptainer_*_"$arch".deb 2>/dev/null | head -n 1 || true)
if [ -n "$existing" ]; then
    echo "$existing"
    exit 0
fi
state="$dir/.apt"
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/etc/sources.list.d" "$state/etc/preferences.d"
echo "deb $mirror $suite main" > "$state/etc/sources.list"
aptopts="-o Dir::Etc::SourceList=$state/etc/sources.list -o Dir::Etc::SourceParts=$state/etc/sources.list.d \
 -o Dir::Etc::PreferencesParts=$state/etc/preferences.d -o Dir::State::Lists=$state/lists -o Dir::Cache=$state/cache \
 -o Dir::State::Status=/dev/null -o Acquire::Check-Valid-Until=false -o APT::Sandbox::User=root"
# shellcheck disable=SC2086
apt-get -q $aptopts update >&2
cd "$dir"
# shellcheck disable=SC2086
apt-get -q $aptopts download "apptainer:$arch" >&2
ls "$dir"/apptainer_*_"$arch".deb | head -n 1
