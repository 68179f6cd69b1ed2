"""Build the optional C accelerator; without a compiler the pure-Python package installs."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pyvmalloc._speedups",
            sources=["src/pyvmalloc/_speedups.c"],
            optional=True,  # a failed build leaves the (complete) pure-Python reference
            extra_compile_args=["-O2"],
        )
    ]
)
