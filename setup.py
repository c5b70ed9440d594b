"""Ships `lch_lm_eval.pth` into site-packages (regular and editable installs); the rest is in pyproject.toml.

The .pth file registers lch as the lm-eval model `lch` (`harness/lm_eval/hook.py`): lm-eval has no plugin
entry points, and pyproject metadata cannot place a file at the top of site-packages.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = Path(__file__).parent / "lch_lm_eval.pth"


class BuildPyWithPth(build_py):
    """build_py that also puts the .pth file at the top of the wheel (site-packages once installed)."""

    def run(self):
        """Build the packages, then copy the .pth file beside them."""
        super().run()
        self.copy_file(str(PTH), str(Path(self.build_lib) / PTH.name))


class EditableWheelWithPth(editable_wheel):
    """`pip install -e` builds an editable wheel without build_py's outputs: add the .pth file to it too."""

    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        shutil.copy(PTH, Path(unpacked_wheel) / PTH.name)
        return result


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
