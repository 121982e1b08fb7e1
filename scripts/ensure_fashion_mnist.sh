#!/usr/bin/env bash
# Make the default data (Fashion-MNIST) available: Debian's dataset-fashion-mnist
# package where apt is available and we may use it; otherwise say how to get it.
set -u
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/train-images-idx3-ubyte.gz" ] || [ -n "${AVALANCHE_SST_DATA:-}" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && SUDO="sudo -n"
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    echo "Installing Debian's dataset-fashion-mnist into $DIR ..."
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist \
      && exit 0
  fi
fi
cat >&2 <<MSG
Fashion-MNIST was not found in $DIR and could not be installed automatically.
Get it one of these ways, then rerun:
  - Debian/Ubuntu:  sudo apt-get install dataset-fashion-mnist
  - any machine:    put the four *-ubyte.gz files in a folder and export AVALANCHE_SST_DATA=/that/folder
  - with network:   python -c "from avalanche_sst.benchmarks import fashion_mnist; fashion_mnist(download=True)"
MSG
exit 1
