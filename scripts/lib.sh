# Shared helpers for ferry's setup scripts (sourced, not run).

# Install the Debian packages among "$@" that are not installed yet; touch apt
# only when something is missing, so a set-up machine costs no network.
ensure_debs() {
    local pkg missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    printf 'setup: installing Debian packages: %s\n' "${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
