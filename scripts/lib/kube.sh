# shellcheck shell=bash
# kubernetes-validate, from PyPI, in a virtualenv kept under the user's
# cache directory (created when missing): it checks rendered manifests
# against the official schemas of each Kubernetes version, offline.
# install_kubernetes_validate sets KUBERNETES_VALIDATE to the program.
# Sourced by scripts/test.

KUBERNETES_VALIDATE_VERSION=1.37.0

install_kubernetes_validate() {
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/graven-test/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
    KUBERNETES_VALIDATE="$venv/bin/kubernetes-validate"
    [ -x "$KUBERNETES_VALIDATE" ] && return 0
    echo "==> installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv" >&2
    if ! python3 -c 'import ensurepip' 2>/dev/null; then
        # shellcheck source=apt.sh
        . "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
        apt_install python3-venv
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
}
