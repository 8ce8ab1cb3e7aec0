#!/usr/bin/env bash
# Dependency audit: pip-audit over every package installed in the project's environment ($VENV), against
# PyPI's vulnerability data. Fails on any known vulnerability not in audit-allowlist.txt, and (--strict)
# on any package it could not look up, so a network problem never passes as "no vulnerabilities".
# pip-audit runs from its own virtual environment (.venv-audit) so that its dependencies are not audited
# as ours. Exit status: 0 clean, 1 vulnerabilities found or the audit could not complete.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
AUDIT_VENV=${AUDIT_VENV:-.venv-audit}
ALLOWLIST=${ALLOWLIST:-audit-allowlist.txt}

# Each allow-list line: a vulnerability ID, then why it does not apply (required).
ignores=()
while read -r id reason; do
    [[ -z "$id" || "$id" == \#* ]] && continue
    if [ -z "$reason" ]; then
        echo "audit: $ALLOWLIST: $id has no reason; write why it does not apply after the ID" >&2
        exit 1
    fi
    ignores+=(--ignore-vuln "$id")
done < "$ALLOWLIST"

if [ ! -x "$AUDIT_VENV/bin/pip-audit" ]; then
    python3 -m venv "$AUDIT_VENV"
    "$AUDIT_VENV/bin/python" -m pip install -q "pip-audit>=2.7"
fi


requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
# Our own package is not on PyPI: audit what it installs, pinned exactly as installed.
"$VENV/bin/python" -m pip freeze --exclude-editable --all | grep -v '^tfclassify' > "$requirements"
echo "audit: $(wc -l < "$requirements") packages from $VENV, $((${#ignores[@]} / 2)) allow-listed"
exec "$AUDIT_VENV/bin/pip-audit" --strict --no-deps --disable-pip --progress-spinner off --desc on \
    -r "$requirements" "${ignores[@]}"
