"""What a user installs: import names, no stray top-level modules, lazy heavy imports."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_installs_only_under_scalemon(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("scalemon-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"scalemon", wheel.name.split("-py3")[0] + ".dist-info"}, top_level
    for module in ("scalemon/cli/__init__.py", "scalemon/tui/__init__.py",
                   "scalemon/probes/__init__.py", "scalemon/probes/step/probe.py",
                   "scalemon/probes/system/probe.py", "scalemon/trainer/__init__.py",
                   "scalemon/core/scaling.py", "scalemon/state/fold.py",
                   "scalemon/tui/scalemon.tcss"):
        assert module in names


def run_python(code: str) -> str:
    # From a neutral directory, so the source tree is not on sys.path by accident.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd="/", timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_installed_import_names():
    out = run_python(
        "import importlib.util as u, scalemon.tui, scalemon.probes;"
        "print(u.find_spec('tui'), u.find_spec('probes'), scalemon.tui.__name__)"
    )
    assert out.split() == ["None", "None", "scalemon.tui"]


def test_cli_and_probes_do_not_import_torch_or_textual():
    out = run_python(
        "import sys, scalemon.cli, scalemon.probes, scalemon.core.plan, scalemon.state.summary,"
        "scalemon.sources.rundir, scalemon.views.headless, scalemon.run.discovery;"
        "print(sorted(m for m in ('torch', 'textual') if m in sys.modules))"
    )
    assert out.strip() == "[]"


def test_console_script_help():
    result = subprocess.run([Path(sys.executable).parent / "scalemon", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "plan" in result.stdout
