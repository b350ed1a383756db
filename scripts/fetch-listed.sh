# Sourced by the fetch-*.sh scripts: fetch_listed LINE INDEX DIR fetches the file an apt
# --print-uris LINE names ('URI' NAME SIZE SHA256:HASH) into DIR with apt's own downloader,
# which keeps it only when its SHA256 is the one INDEX (the suite's signed index) gives;
# records the hash beside it and prints its path. Needs $aptopts.
fetch_listed() {
    line=$1
    # shellcheck disable=SC2086
    set -- $1 "$2" "$3"
    uri=$(echo "$1" | tr -d "'")
    name=$2
    hash=$4
    index=$5
    dir=$6
    case "$hash" in SHA256:*) ;; *) echo "no SHA256 for $name in the $index index: $line" >&2; exit 1;; esac
    rm -f "$dir/$name" "$dir/$name.FAILED"
    # shellcheck disable=SC2086
    if ! /usr/lib/apt/apt-helper -q $aptopts download-file "$uri" "$dir/$name" "$hash" >&2; then
        rm -f "$dir/$name" "$dir/$name.FAILED"
        echo "could not fetch $name with the checksum the $index index gives ($hash) from $uri" >&2
        exit 1
    fi
    echo "${hash#SHA256:}" > "$dir/$name.sha256"
    echo "$dir/$name"
}
