"""Build hetnet's Cython kernels, with OpenMP where the compiler has it.

``HETNET_NO_OPENMP=1`` forces a serial build.  Without OpenMP support in the
compiler the same sources build serially (``prange`` becomes a plain loop);
``hetnet.build_info()`` reports which one was built.
"""

import os
import shutil
import subprocess
import sys
import tempfile

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext


def _compiler_has_openmp(compiler):
    """Compile and link a tiny OpenMP program; True if it works."""
    if os.environ.get("HETNET_NO_OPENMP"):
        return False
    src = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    tmp = tempfile.mkdtemp()
    try:
        path = os.path.join(tmp, "omp_check.c")
        with open(path, "w") as f:
            f.write(src)
        objects = compiler.compile([path], output_dir=tmp, extra_postargs=["-fopenmp"])
        compiler.link_executable(objects, "omp_check", output_dir=tmp, extra_postargs=["-fopenmp"])
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    def build_extensions(self):
        openmp = sys.platform != "win32" and _compiler_has_openmp(self.compiler)
        if not openmp:
            print("hetnet: compiler has no OpenMP; building the CPU kernels serially")
        for ext in self.extensions:
            # no errno from libm: lets sqrtf vectorise (the optimiser updates)
            ext.extra_compile_args = ["-O3", "-fno-math-errno"]
            if openmp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
        super().build_extensions()


def _extensions():
    from Cython.Build import cythonize

    exts = [Extension(f"hetnet._cpu.{n}", [f"hetnet/_cpu/{n}.pyx"])
            for n in ("blas", "conv", "elementwise", "fused", "norm", "pool")]
    # the C launcher of OpenCL kernels lives with the OpenCL device it serves
    exts.append(Extension("hetnet.devices.opencl._clenqueue",
                          ["hetnet/devices/opencl/_clenqueue.pyx"]))
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False,
                             "cdivision": True, "initializedcheck": False},
    )


setup(
    # every hetnet.* package found on disk, so a new subpackage needs no edit here
    packages=find_packages(include=["hetnet", "hetnet.*"]) + ["hetnet.clkernels", "hetnet._datasets"],
    package_dir={"hetnet.clkernels": "clkernels", "hetnet._datasets": "datasets"},
    package_data={"hetnet": ["py.typed"], "hetnet.clkernels": ["*.cl"], "hetnet._cpu": ["*.pyx", "*.pxd", "*.pxi"],
                  "hetnet.devices.opencl": ["*.pyx"],
                  "hetnet._datasets": ["fashion-mnist-sample/*.gz", "MANIFEST.json", "README.md"]},
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExt},
)
