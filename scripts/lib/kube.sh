# shellcheck shell=bash
# kubernetes-validate, from PyPI, in a virtualenv kept under the user's
# cache directory (see venv.sh): it checks rendered manifests against the
# official schemas of each Kubernetes version, offline.
# install_kubernetes_validate sets KUBERNETES_VALIDATE to the program.
# Sourced by scripts/test.

KUBERNETES_VALIDATE_VERSION=1.37.0

# shellcheck source=venv.sh
. "$(dirname "${BASH_SOURCE[0]}")/venv.sh"

install_kubernetes_validate() {
    venv_tool "kubernetes-validate-$KUBERNETES_VALIDATE_VERSION" \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" kubernetes-validate
    KUBERNETES_VALIDATE=$VENV_TOOL
}
