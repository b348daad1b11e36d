# shellcheck shell=bash
# venv_tool NAME SPEC PROGRAM: makes sure a virtualenv under the user's
# cache directory (graven-test/NAME) has pip's SPEC installed, creating it
# when missing (python3-venv installed from Debian's packages when needed,
# as root), and sets VENV_TOOL to its bin/PROGRAM. Sourced by the helpers
# of the test command's Python tools.

venv_tool() {
    local name=$1 spec=$2 program=$3
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/graven-test/$name"
    VENV_TOOL="$venv/bin/$program"
    [ -x "$VENV_TOOL" ] && return 0
    echo "==> installing $spec into $venv" >&2
    if ! python3 -c 'import ensurepip' 2>/dev/null; then
        # shellcheck source=apt.sh
        . "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
        apt_install python3-venv
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$spec"
}
