#!/usr/bin/env bash
# Create .venv with a Python >= 3.12 and install topbc with its dev extras.
# Finds the interpreter on PATH first, then under pyenv; says what to install when there is none.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; }

find_python() {
    local c
    for c in ${PYTHON:-} python3.12 python3.13 python3; do  # 3.12 first: the version the project is tested on
        if command -v "$c" >/dev/null 2>&1 && ok "$(command -v "$c")"; then command -v "$c"; return 0; fi
    done
    local root
    root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
    for c in $(ls -d "$root"/versions/3.12* 2>/dev/null | sort -V -r) $(ls -d "$root"/versions/3.1[3-9]* 2>/dev/null | sort -V); do
        if [ -x "$c/bin/python3" ] && ok "$c/bin/python3"; then echo "$c/bin/python3"; return 0; fi
    done
    return 1
}

# The demo simulator (MuJoCo) renders offscreen through EGL with Mesa's CPU rasteriser (MUJOCO_GL=egl).
GL_PACKAGES="libegl1 libopengl0 libegl-mesa0 libgl1-mesa-dri"
# apt_install WHAT PACKAGES HINT: install Debian packages where apt-get can (as root, or through sudo without a
# password); otherwise say what is missing and what it costs (HINT), and carry on.
apt_install() {
    local what=$1 packages=$2 hint=$3 sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    if command -v apt-get >/dev/null 2>&1 && { [ -z "$sudo" ] || sudo -n true 2>/dev/null; }; then
        echo "Installing $what: $packages"
        { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
            --no-install-recommends $packages; } || echo "warning: could not install $packages" >&2
    else
        echo "warning: $hint (Debian/Ubuntu: apt-get install $packages)" >&2
    fi
}

ensure_gl_libs() {
    local libs
    libs=$(ldconfig -p 2>/dev/null || true)
    if grep -q 'libEGL.so.1' <<<"$libs" && grep -q 'libOpenGL.so.0' <<<"$libs" \
       && compgen -G '/usr/lib/*/dri/swrast_dri.so' >/dev/null; then
        return 0
    fi
    apt_install "the EGL/Mesa libraries MuJoCo renders with" "$GL_PACKAGES" \
        "EGL/Mesa libraries not found; the MetaWorld demo cannot render: install them and run with MUJOCO_GL=egl"
}
ensure_gl_libs

# The review page's browser test (tests/test_review.py) drives the system's Chromium through its chromedriver;
# Selenium is given the driver's path, so nothing is downloaded at run time.
BROWSER_PACKAGES="chromium chromium-driver"
ensure_browser() {
    if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
        return 0
    fi
    apt_install "the headless browser the review page is tested with" "$BROWSER_PACKAGES" \
        "chromium or chromedriver not found; the review page's browser test will fail: install them, or set TOPBC_SKIP_BROWSER=1 to skip it"
}
ensure_browser

if [ -x "$VENV/bin/python" ] && ok "$VENV/bin/python" && [ -f "$VENV/.topbc-installed" ] \
   && [ "$VENV/.topbc-installed" -nt pyproject.toml ]; then
    exit 0
fi

if ! PY=$(find_python); then
    echo "topbc needs Python >= 3.12 (lerobot 0.6 requires it), and none was found on PATH or under pyenv." >&2
    echo "Install one, e.g. 'pyenv install 3.12' or your system's python3.12 package, or set PYTHON=/path/to/python3.12." >&2
    exit 1
fi
echo "Using $PY ($("$PY" --version))"
[ -x "$VENV/bin/python" ] && ok "$VENV/bin/python" || "$PY" -m venv --clear "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -e ".[dev]"
touch "$VENV/.topbc-installed"
