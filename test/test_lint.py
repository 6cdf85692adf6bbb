"""The linters of the ament_python package template (ament_flake8, ament_pep257) as ruff rules.

The rules are in ruff.toml; the whole tree passes them, as `colcon test` would check a ROS
package.
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tree_passes_the_ament_lint_rules():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                          "--output-format", "concise", str(ROOT)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "No module named ruff" not in out.stderr, "ruff missing: install the `test` extra"
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def test_the_lint_rules_are_the_ament_ones():
    """The configuration keeps pep257 docstrings, 99 columns and the import order."""
    cfg = (ROOT / "ruff.toml").read_text()
    assert "line-length = 99" in cfg and 'convention = "pep257"' in cfg
    for rule in ("E", "W", "F", "D", "I", "A", "C4", "BLE", "Q"):
        assert f'"{rule}"' in cfg
