# Shared helpers for scripts/: install missing Debian packages (apt-get update once).
# shellcheck shell=bash

# need_pkgs CMD:PKG ... — install PKG when CMD is not on PATH (or when PKG is not installed
# if CMD is "-").
need_pkgs() {
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    if [ "$cmd" = "-" ]; then
      dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    else
      command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "${UNDERSTUDY_APT_UPDATED:-}" ]; then
    $sudo apt-get update -q
    export UNDERSTUDY_APT_UPDATED=1
  fi
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

build_deps() {
  need_pkgs cmake:cmake cc:gcc c++:g++ make:make pkg-config:pkg-config
}
