"""Build script: everything is declared in pyproject.toml except the optional C extension.

The C kernels (csrc/, compiled through cffi by csrc/build_ffi.py) are optional. Without a
working C compiler the build prints a warning and installs lepton_nn without them; then
`lepton_nn.kernels.backends()` reports the c backend unavailable, with the reason, and the
numba and numpy backends are used.
"""
import importlib.machinery
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

_BUILD_ERRORS = (CCompilerError, ExecError, PlatformError, OSError)


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed C build into a warning: the C backend is optional."""

    def finalize_options(self):
        super().finalize_options()
        self.failed = []
        for ext in self.extensions:
            ext.optional = True  # tells setuptools not to copy a missing build into the tree

    def run(self):
        try:
            super().run()
        except _BUILD_ERRORS as err:  # e.g. no usable compiler at all
            for ext in self.extensions:
                self._skip(ext, err)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except _BUILD_ERRORS as err:
            self._skip(ext, err)

    def copy_extensions_to_source(self):  # in-place and editable builds
        super().copy_extensions_to_source()
        # An earlier build left in the source tree would still be imported: remove it, so
        # that what is importable matches what was just built (nothing) rather than old code.
        build_py = self.get_finalized_command("build_py")
        for ext in self.failed:
            package, _, name = self.get_ext_fullname(ext.name).rpartition(".")
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                stale = os.path.join(build_py.get_package_dir(package), name + suffix)
                if os.path.exists(stale):
                    os.remove(stale)

    def _skip(self, ext, err):
        self.failed.append(ext)
        print(f"WARNING: could not build the C extension {ext.name} ({type(err).__name__}: {err}).\n"
              "         lepton_nn is installed without its c backend; the numba and numpy\n"
              "         backends still work. Install a C compiler and run `pip install -e .` again.",
              file=sys.stderr)


setup(
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
