# shellcheck shell=bash
# apt_install PACKAGE...: installs Debian packages, as root, running
# `apt-get update` at most once per script. Sourced by the other helpers.

apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: this needs $*: apt-get install $* (as root)" >&2
        return 1
    fi
    if [ -z "${APT_UPDATED:-}" ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    echo "==> installing $* (Debian's packages)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
