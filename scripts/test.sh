#!/usr/bin/env bash
# Set up a virtual environment with hetnet and its test dependencies, make sure
# the OpenCL tests have an OpenCL platform that can compile kernels, and run
# the test suite.  Extra arguments go to pytest.
#
# The OpenCL tests run on PoCL, the CPU OpenCL platform.  pip's PoCL cannot
# compile for CPUs its LLVM does not recognise ("unknown target CPU
# 'generic'"); then, as root with apt-get, this installs Debian's
# pocl-opencl-icd, and otherwise says that the OpenCL tests will be skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'

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
if ! .venv/bin/python -c "$probe" 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test.sh: no OpenCL device here can compile kernels; installing Debian's pocl-opencl-icd"
        { apt-get update -q && apt-get install -y -q pocl-opencl-icd; } >/dev/null 2>&1 ||
            echo "scripts/test.sh: apt-get could not install pocl-opencl-icd; the OpenCL tests will be skipped"
    else
        echo "scripts/test.sh: no OpenCL device here can compile kernels; the OpenCL tests will be skipped" \
             "(apt-get install pocl-opencl-icd provides one)"
    fi
fi
exec .venv/bin/python -m pytest -q "$@"
