"""An earlier release of nubes, taken from this repository's git history, ready to run.

The rolling-upgrade test runs release N beside this tree (N+1): N's tree is
exported with ``git archive`` (no checkout, so the working tree is left
alone) and gets a virtualenv of its own whose ``.pth`` file puts N's tree
first and then the site-packages of the interpreter running the tests: N's
code runs from N's tree, and the dependencies (the same major versions
across one release) are shared instead of downloaded again::

    release = prepare_release(repo_root(), "06d86b4", tmp_path / "release-n")
    subprocess.run([*release.argv(), "-m", "nubes.cmd.manage", ...], env=...)

Processes of the release must run without PYTHONPATH (see
``ProcessCloud.environ``) and with ``-P`` (:meth:`Release.argv`), or the
tree running the tests would shadow it.
"""

from __future__ import annotations

import io
import site
import subprocess
import tarfile
import venv
from dataclasses import dataclass
from pathlib import Path

#: Seconds git may take to export a tree.
GIT_TIMEOUT = 120.0


class MissingHistory(RuntimeError):
    """The release's commit is not in this clone (a shallow clone)."""


@dataclass(frozen=True)
class Release:
    commit: str
    #: The release's source tree (what ``git archive`` gave).
    tree: Path
    #: The interpreter of its virtualenv.
    python: str

    def argv(self) -> list[str]:
        """How to start its interpreter: ``-P``, or the current directory (this
        tree, when the tests run from it) would come before the release's."""
        return [self.python, "-P"]

    def service_version(self) -> int:
        """``SERVICE_VERSION`` of the release, as its own code says."""
        out = subprocess.run(
            [*self.argv(), "-c", "from nubes import versions; print(versions.SERVICE_VERSION)"],
            check=True, capture_output=True, text=True, env=_clean_env(),
        )  # fmt: skip
        return int(out.stdout.strip())


def repo_root(start: Path | None = None) -> Path:
    """The top of the git repository holding ``start`` (this file by default)."""
    where = start or Path(__file__).resolve().parent
    out = subprocess.run(
        ["git", "-C", str(where), "rev-parse", "--show-toplevel"],
        check=False, capture_output=True, text=True, timeout=GIT_TIMEOUT,
    )  # fmt: skip
    if out.returncode != 0:
        raise MissingHistory(f"{where} is not in a git clone: {out.stderr.strip()}")
    return Path(out.stdout.strip())


def prepare_release(repo: Path, commit: str, workdir: Path) -> Release:
    """Export ``commit`` of ``repo`` into ``workdir`` and give it a virtualenv."""
    known = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "-e", f"{commit}^{{commit}}"],
        check=False, capture_output=True, text=True, timeout=GIT_TIMEOUT,
    )  # fmt: skip
    if known.returncode != 0:
        raise MissingHistory(
            f"commit {commit} (the release the upgrade starts from) is not in the history "
            f"of {repo}; the rolling-upgrade test needs a full clone (git fetch --unshallow, "
            f"or fetch-depth: 0 in CI)"
        )
    tree = workdir / f"nubes-{commit}"
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", commit],
        check=True, capture_output=True, timeout=GIT_TIMEOUT,
    )  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    env_dir = workdir / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, env=_clean_env(),
    ).stdout.strip()  # fmt: skip
    shared = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib) / "nubes-release.pth").write_text("\n".join([str(tree), *shared]) + "\n")
    return Release(commit, tree, str(python))


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
