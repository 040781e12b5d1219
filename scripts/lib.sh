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

# admin_token DIR — a fresh random admin API token for `mcu serve`: sets ADMIN_TOKEN_FILE
# (DIR/admin-token, give it to --admin-token-file) and ADMIN_AUTH_HEADER (DIR/admin-auth.header,
# its `Authorization: Bearer ...` line for `curl -H @FILE`, so that the token never appears on
# a command line). Any --http-listen address that is not loopback needs the token.
admin_token() {
  ADMIN_TOKEN_FILE="$1/admin-token"
  ADMIN_AUTH_HEADER="$1/admin-auth.header"
  local token
  token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  (umask 077
    printf '%s\n' "$token" >"$ADMIN_TOKEN_FILE"
    printf 'Authorization: Bearer %s\n' "$token" >"$ADMIN_AUTH_HEADER")
}

# api_curl ARGS... — curl with the admin token of `admin_token` (for GET /api/... and the
# operator's controls).
api_curl() {
  curl -H @"$ADMIN_AUTH_HEADER" "$@"
}

# build_deps — what building the workspace needs: cmake and a C/C++ toolchain (the bundled
# libopus), pkg-config and libvpx-dev (pcap-harness decodes VP8 with the system libvpx).
build_deps() {
  need_pkgs cmake:cmake cc:gcc c++:g++ make:make pkg-config:pkg-config -:libvpx-dev
}

# need_browser — what web-client/test/browser.mjs needs: Debian's Chromium, Node.js and npm
# (playwright-core 1.65 wants Node.js 20 or later), and the driver's npm packages, installed
# with `npm ci` when node_modules is missing or older than package-lock.json.
# need_schemathesis — schemathesis (PyPI, the version pinned in
# mcu/tests/openapi-requirements.txt) in target/schemathesis-venv, for mcu/tests/openapi.rs.
need_schemathesis() {
  need_pkgs python3:python3 -:python3-venv
  local root venv req
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  venv="$root/target/schemathesis-venv"
  req="$root/mcu/tests/openapi-requirements.txt"
  if [ ! -x "$venv/bin/st" ] || [ "$req" -nt "$venv/bin/st" ]; then
    echo "installing schemathesis in $venv" >&2
    python3 -m venv "$venv" || return 1
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" || return 1
    touch "$venv/bin/st"
  fi
}

need_browser() {
  need_pkgs chromium:chromium node:nodejs npm:npm
  local major
  major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$major" -lt 20 ]; then
    echo "need_browser: Node.js $(node --version 2>/dev/null) is too old for playwright-core (20 or later)" >&2
    return 1
  fi
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/web-client/test"
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    echo "installing the browser driver's npm packages in $dir" >&2
    (cd "$dir" && npm ci --no-audit --no-fund) || return 1
    touch "$dir/node_modules"
  fi
}
