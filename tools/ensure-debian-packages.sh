#!/usr/bin/env bash
# Installs Debian packages: "command:package" installs package when command is missing,
# a bare "package" installs it unconditionally (when no command tells whether it is there).
# Used by the Makefile so that a fresh machine needs nothing but make and python3.
set -euo pipefail
missing=()
for pair in "$@"; do
  if [[ "$pair" == *:* ]]; then
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  else
    missing+=("$pair")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
else
  sudo=
fi
echo "installing Debian packages: ${missing[*]}" >&2
$sudo apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
