#!/usr/bin/env bash
# Set up a virtual environment with hetnet and its test dependencies, make sure
# the OpenCL tests have an OpenCL platform that can compile kernels and the MPI
# tests an MPI library, and run the test suite.  Extra arguments go to pytest.
#
# The OpenCL tests run on PoCL, the CPU OpenCL platform.  pip's PoCL cannot
# compile for CPUs its LLVM does not recognise ("unknown target CPU
# 'generic'"); then, as root with apt-get, this installs Debian's
# pocl-opencl-icd, and otherwise says that the OpenCL tests will be skipped.
# The MPI tests (hetnet.distributed, under mpirun -n 2) need Open MPI, which
# as root with apt-get this installs from Debian (openmpi-bin libopenmpi-dev),
# and mpi4py (the `mpi` extra); without them they are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# mpi4py's wheel installs without an MPI library (it loads one at run time)
.venv/bin/pip install -q -e '.[test,mpi]' || {
    echo "scripts/test.sh: mpi4py could not be installed; the MPI tests will be skipped"
    .venv/bin/pip install -q -e '.[test]'
}
# the documentation site's tools: tests/test_docs.py builds it with warnings as errors
.venv/bin/pip install -q 'sphinx>=7' 'numpydoc>=1.6' 'myst-parser>=2' ||
    echo "scripts/test.sh: Sphinx could not be installed; the documentation build test will be skipped"

probe='
import sys
try:
    import pyopencl as cl
    platforms = cl.get_platforms()
except Exception:
    sys.exit(1)
for p in platforms:
    for d in p.get_devices():
        try:
            cl.Program(cl.Context([d]), "__kernel void k(__global float *x) { x[0] = 1.0f; }").build()
            sys.exit(0)
        except Exception:
            pass
sys.exit(1)
'
packages=()
if ! .venv/bin/python -c "$probe" 2>/dev/null; then
    echo "scripts/test.sh: no OpenCL device here can compile kernels"
    packages+=(pocl-opencl-icd)
fi
if ! command -v mpirun >/dev/null 2>&1; then
    echo "scripts/test.sh: no MPI launcher (mpirun) here"
    packages+=(openmpi-bin libopenmpi-dev)
fi
if [ ${#packages[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test.sh: installing Debian's ${packages[*]}"
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}"; } >/dev/null 2>&1 ||
            echo "scripts/test.sh: apt-get could not install ${packages[*]}; the tests that need them will be skipped"
    else
        echo "scripts/test.sh: not root with apt-get, so ${packages[*]} cannot be installed here;" \
             "the OpenCL / MPI tests that need them will be skipped"
    fi
fi
exec .venv/bin/python -m pytest -q "$@"
