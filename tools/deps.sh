#!/usr/bin/env bash
# Installs qkf's build and test dependencies from Debian 12 packages (idempotent; needs root or
# sudo). python3-h5py and python3-matplotlib draw trace plots; python3-dev and python3-numpy build
# and run the Python module qkf, python3-pytest tests it, and python3-torch runs its round trip
# through the official checkpoint format (and the reference scripts). The C tests never need
# Python.
set -euo pipefail
PKGS="build-essential cmake pkg-config libuv1-dev libhdf5-dev hdf5-tools libcriterion-dev
      libopenblas-openmp-dev zlib1g-dev libyaml-dev liblz4-dev libzstd-dev dataset-fashion-mnist
      python3-h5py python3-matplotlib python3-dev python3-numpy python3-pytest python3-torch
      libopenblas0-openmp"
if [ "${QKF_MPI:-0}" = 1 ]; then # the optional MPI build (-DQKF_MPI=ON, docs/mpi.md)
  PKGS="$PKGS libopenmpi-dev openmpi-bin"
fi
if [ "${QKF_CROSS:-1}" = 1 ] && [ "$(uname -m)" = x86_64 ]; then # tools/cross/aarch64.sh
  PKGS="$PKGS gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"
fi
if [ "${QKF_PYTHON_DEPS:-0}" = 1 ]; then
  PKGS="$PKGS python3-torch python3-h5py python3-numpy python3-matplotlib libopenblas0-openmp"
fi
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
