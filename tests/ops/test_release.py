"""The release, installed the way a stranger would install it, far from the checkout.

The wheel is built as a release is (``python -m build``: the sdist, then the wheel from the sdist)
from a copy of the checkout's files, and installed with pip into a fresh virtualenv outside the
checkout; its dependencies come from the package index (pip's cache makes that a minute or so).
Then, from a working directory that holds nothing of the checkout, the installed ``flask``
migrates a fresh PostgreSQL database and the installed ``gunicorn`` serves pages, static files
and the readiness check from the package alone, while ``/readyz`` names what is missing when the
installed templates or migrations are gone.

Last, README's deployment section is followed to the letter: its ```sh deploy block, read from
README.md (or the file named by ``README_UNDER_TEST``), runs in bash from a copy of the checkout,
with its places set by the environment, against real PostgreSQL, Redis, an SMTP server and an
OpenID provider, until the gunicorn it starts answers ``/readyz``.

Slow (a few minutes in all): marked ``slow``; it runs in CI.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests

from tests.databases import require_or_skip, temporary_database
from tests.notifications.smtp import SmtpServer
from tests.support.oidc import free_port, mock_idp_process

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("release")]

ROOT = Path(__file__).resolve().parents[2]
#: The README whose deployment block is run (relative to the repository); the lead's copy under
#: review may be named instead.
README = ROOT / os.environ.get("README_UNDER_TEST", "README.md")
#: The fenced block of README's deployment section that is meant to be run as it stands.
DEPLOY_BLOCK = re.compile(r"^```sh deploy\n(.*?)^```$", re.MULTILINE | re.DOTALL)

#: Top-level entries of a checkout that a release never reads: version control, local
#: environments, caches, build output and test artifacts.
LOCAL_ONLY = frozenset(
    {".git", ".venv", "build", "dist", "instance", "test-artifacts", ".benchmarks"}
    | {".mypy_cache", ".ruff_cache", ".pytest_cache"}
)
#: Generated anywhere in the tree; a stale ``*.egg-info`` would even add its file list to the sdist.
GENERATED = ("__pycache__", "*.py[cod]", "*.egg-info", "node_modules")

#: Text only templates/core/index.html has: the home page was rendered from the installed package.
HOME_PAGE_TEXT = "Open models need open science partners."
#: The login page's title (templates/auth/login.html inside templates/base.html).
LOGIN_PAGE_TEXT = "<title>Log in · ATOM Partner Portal</title>"
#: Settings a test gives a deployment itself (with every ``PORTAL_*`` and ``FLASK_*``); whatever
#: the developer's shell says is dropped.
HOST_SETTINGS = ("SECRET_KEY", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")
#: What would let the deployment import the checkout, or run another virtualenv's programs.
FOREIGN_PYTHON = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")

#: Generous bounds for a loaded 2-core machine: a gunicorn whose workers import the portal; the
#: README block, which also builds the release and installs it with its dependencies.
START_SECONDS = 120
DEPLOY_SECONDS = 600
STOP_SECONDS = 30
#: pip, with every dependency of the portal to install (from its cache when it has them).
INSTALL_SECONDS = 600


# --- The release: built, and installed in a fresh virtualenv -------------------------------------


@dataclass(frozen=True)
class Release:
    """The wheel installed in a virtualenv of its own: ``package`` is the installed ``portal``."""

    source: Path
    venv: Path
    package: Path

    def program(self, name: str) -> str:
        return str(self.venv / "bin" / name)


def copy_checkout(dest: Path) -> Path:
    """The checkout's files as a fresh clone with work in progress would have them: nothing built,
    no local environments. A build writes into its source folder (``*.egg-info``, ``build/``), so
    builds from a copy never meet the checkout or each other (parallel test runs)."""

    def ignored(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == ROOT
        return {
            n
            for n in names
            if (top and n in LOCAL_ONLY) or any(fnmatch.fnmatch(n, p) for p in GENERATED)
        }

    shutil.copytree(ROOT, dest, ignore=ignored, symlinks=True)
    return dest


def host_environ(venv: Path | None, env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a host that runs the release: this process's, less any portal setting
    (``PORTAL_*``, ``FLASK_*`` and HOST_SETTINGS) and anything that would let Python find
    the checkout or another virtualenv; ``venv``'s programs first on ``PATH``; plus ``env``."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PORTAL_", "FLASK_"))
        and k not in HOST_SETTINGS
        and k not in FOREIGN_PYTHON
    }
    path = inherited.get("PATH", os.defpath)
    if venv is not None:
        path = f"{venv / 'bin'}{os.pathsep}{path}"
    return {**inherited, "PATH": path, **env}


def run(
    command: Sequence[str | Path],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = START_SECONDS,
) -> str:
    """Run a step of the installation; its output, or a failure that quotes the output's end."""
    done = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, command))} exited with {done.returncode}:\n{done.stdout[-4000:]}",
            pytrace=False,
        )
    return done.stdout


def imported_portal(python: str, cwd: Path, env: Mapping[str, str]) -> Path:
    """The package ``import portal`` finds with this interpreter, run where the release runs."""
    out = run([python, "-c", "import portal; print(portal.__file__)"], cwd=cwd, env=env)
    return Path(out.strip().splitlines()[-1]).resolve().parent


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """Build the sdist and the wheel from it, and install the wheel into a new virtualenv; once
    for this module (the install is the slow part)."""
    folder = tmp_path_factory.mktemp("release")
    source = copy_checkout(folder / "checkout")
    dist = folder / "dist"
    run(
        [sys.executable, "-m", "build", "--outdir", dist, source],
        cwd=folder,
        timeout=INSTALL_SECONDS,
    )
    sdists, wheels = list(dist.glob("atom_portal-*.tar.gz")), list(dist.glob("atom_portal-*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in dist.iterdir())
    with zipfile.ZipFile(wheels[0]) as wheel:
        in_wheel = set(wheel.namelist())
    for name in ("templates", "static", "portal/migrations"):
        shipped = [
            p.relative_to(source).as_posix()
            for p in (source / name).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        ]
        expected = {s if s.startswith("portal/") else f"portal/{s}" for s in shipped}
        assert expected and not expected - in_wheel, f"the wheel lacks {expected - in_wheel}"

    venv = folder / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=folder)
    env = host_environ(venv, {})
    run([venv / "bin" / "pip", "install", wheels[0]], cwd=folder, env=env, timeout=INSTALL_SECONDS)
    elsewhere = folder / "elsewhere"
    elsewhere.mkdir()
    package = imported_portal(str(venv / "bin" / "python"), elsewhere, env)
    assert package.is_relative_to(venv.resolve()) and "site-packages" in package.parts, package
    return Release(source=source, venv=venv, package=package)


# --- gunicorn, run from the virtualenv ------------------------------------------------------------


@contextmanager
def started(
    command: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command`` in its own process group (so that stopping it ends everything it started,
    and nothing else), its output into ``log``; stopped when the block ends."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to gunicorn's master (its graceful shutdown): the process itself, or, when it is bash
    running the README block, the gunicorn it started (bash then reaches the block's end); then
    SIGKILL to the process group for anything still there (e.g. a pip install under way)."""
    if process.poll() is None:
        with suppress(psutil.NoSuchProcess):
            targets = [leader := psutil.Process(process.pid)]
            if not is_gunicorn(leader):
                targets = [c for c in leader.children() if is_gunicorn(c)] or targets
            for target in targets:
                target.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_SECONDS)
    with suppress(ProcessLookupError):  # the group has ended
        os.killpg(process.pid, signal.SIGKILL)  # the group this test started, and only it
    process.wait()


def is_gunicorn(process: psutil.Process) -> bool:
    with suppress(psutil.Error):
        return any(Path(arg).name == "gunicorn" for arg in process.cmdline()[:2])
    return False


def log_tail(log: Path) -> str:
    try:
        return log.read_text(encoding="utf-8", errors="replace")[-5000:]
    except FileNotFoundError:
        return "(no output)"


def wait_for(
    process: subprocess.Popen[bytes], url: str, log: Path, seconds: float, *, status: int
) -> requests.Response:
    """Poll ``url`` until it answers ``status``; fail with the log's end when the process exits
    first or the deadline passes."""
    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"{process.args!r} exited with {process.returncode}:\n{log_tail(log)}",
                pytrace=False,
            )
        try:
            resp = requests.get(url, timeout=5)
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or its workers are still loading the portal
        else:
            if resp.status_code == status:
                return resp
            last = f"{resp.status_code} {resp.text[:300]}"
        time.sleep(0.2)  # polling a starting server, not synchronising the test
    pytest.fail(f"{url} did not answer {status} in {seconds:g} s (last: {last}):\n{log_tail(log)}")


@dataclass(frozen=True)
class Deployment:
    """The release, migrated on its own PostgreSQL database, run from ``folder`` (which holds
    nothing of the checkout) with ``environ``."""

    release: Release
    folder: Path
    environ: dict[str, str]

    @contextmanager
    def gunicorn(self, name: str, *, workers: int) -> Iterator[str]:
        """The release's gunicorn with the portal's own configuration module, as README runs it;
        yields its base URL once ``/healthz`` answers (``/readyz`` may still say "not ready")."""
        port = free_port()
        command = [
            self.release.program("gunicorn"),
            *("-c", "python:portal.ops.gunicorn_conf", "--workers", str(workers)),
            *("--bind", f"127.0.0.1:{port}", "portal:create_app()"),
        ]
        log = self.folder / f"gunicorn-{name}.log"
        with started(command, cwd=self.folder, env=self.environ, log=log) as process:
            url = f"http://127.0.0.1:{port}"
            wait_for(process, f"{url}/healthz", log, START_SECONDS, status=200)
            yield url


@pytest.fixture(scope="module")
def deployment(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A fresh PostgreSQL database migrated by the installed ``flask db upgrade``, production
    settings with a strong secret key and nothing else (``instance`` is the working directory's)."""
    folder = tmp_path_factory.mktemp("deployment")
    with temporary_database("postgresql", folder) as url:
        env = host_environ(
            release.venv,
            {
                "PORTAL_ENV": "production",
                "SECRET_KEY": secrets.token_urlsafe(48),
                "DATABASE_URL": url,
            },
        )
        assert imported_portal(release.program("python"), folder, env) == release.package
        run([release.program("flask"), "--app", "portal", "db", "upgrade"], cwd=folder, env=env)
        yield Deployment(release, folder, env)


@contextmanager
def moved_aside(folder: Path) -> Iterator[None]:
    """``folder`` is gone for the block (renamed beside itself), and back afterwards."""
    aside = folder.with_name(f"{folder.name}.moved-aside")
    folder.rename(aside)
    try:
        yield
    finally:
        aside.rename(folder)


def test_the_installed_wheel_serves_the_portal_from_site_packages(deployment: Deployment) -> None:
    release = deployment.release
    with deployment.gunicorn("serves", workers=2) as url:
        home = requests.get(f"{url}/", timeout=30)
        login = requests.get(f"{url}/auth/login", timeout=30)
        css = requests.get(f"{url}/static/css/portal.css", timeout=30)
        ready = requests.get(f"{url}/readyz", timeout=30)

    assert home.status_code == 200 and HOME_PAGE_TEXT in home.text
    assert login.status_code == 200 and LOGIN_PAGE_TEXT in login.text
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert css.content == (release.source / "static" / "css" / "portal.css").read_bytes()
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert set(ready.json()["checks"].values()) == {"ok"}
    # The instance folder is the working directory's, never the installed package's.
    assert (deployment.folder / "instance").is_dir()
    site_packages = release.package.parent
    assert not (release.package / "instance").exists()
    assert not (site_packages / "instance").exists()


@pytest.mark.parametrize(
    ("folder", "answer"),
    [
        ("templates", "templates missing or broken"),
        ("migrations", "migration scripts missing"),
    ],
)
def test_readyz_names_the_installed_folder_that_is_gone(
    deployment: Deployment, folder: str, answer: str
) -> None:
    with (
        moved_aside(deployment.release.package / folder),
        deployment.gunicorn(f"without-{folder}", workers=1) as url,
    ):
        resp = requests.get(f"{url}/readyz", timeout=30)

    assert resp.status_code == 503, resp.text
    body = resp.json()
    assert body["status"] == "not ready"
    assert body["checks"][folder] == answer
    assert {k: v for k, v in body["checks"].items() if k != folder} == {
        k: "ok" for k in body["checks"] if k != folder
    }


# --- README's deployment block, word for word ----------------------------------------------------


def deploy_block(readme: Path) -> str:
    """The one ```sh deploy block of ``readme``."""
    blocks = DEPLOY_BLOCK.findall(readme.read_text(encoding="utf-8"))
    assert len(blocks) == 1, f"{readme} must have exactly one ```sh deploy block, not {len(blocks)}"
    text: str = blocks[0]
    return text


def redis_answers(host: str = "127.0.0.1", port: int = 6379) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def smtp_relay() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_the_readme_deployment_block_deploys_the_release(tmp_path: Path) -> None:
    script = tmp_path / "deploy.sh"
    script.write_text(deploy_block(README), encoding="utf-8")
    if not redis_answers():
        require_or_skip("Redis is not reachable at 127.0.0.1:6379")
    checkout = copy_checkout(tmp_path / "checkout")
    home = tmp_path / "srv" / "atom-portal"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "deploy.log"
    with (
        temporary_database("postgresql", tmp_path) as database_url,
        mock_idp_process() as issuer,
        smtp_relay() as smtp,
    ):
        # What the block's top sets, and what an operator adds to portal.env (its mail relay and
        # identity provider), here from the environment the block runs in.
        env = host_environ(
            None,
            {
                "PORTAL_HOME": str(home),
                "DATABASE_URL": database_url,
                "PORTAL_BASE_URL": "https://portal.example.org",
                "PORTAL_RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/0",
                "PORTAL_RATELIMIT_KEY_PREFIX": f"release-{uuid.uuid4().hex}",
                "PORTAL_BIND": f"127.0.0.1:{port}",
                "PYTHON": sys.executable,
                "PORTAL_MAIL_SERVER": smtp.host,
                "PORTAL_MAIL_PORT": str(smtp.port),
                "PORTAL_OIDC_PROVIDERS": json.dumps(
                    [
                        {
                            "slug": "campus",
                            "name": "Campus login",
                            "issuer": issuer,
                            "client_id": "atom-portal",
                            "kind": "institution",
                        }
                    ]
                ),
                "PORTAL_OIDC_SECRET_CAMPUS": secrets.token_urlsafe(24),
            },
        )
        command = ["bash", "-euo", "pipefail", str(script)]
        with started(command, cwd=checkout, env=env, log=log) as process:
            ready = wait_for(process, f"{url}/readyz", log, DEPLOY_SECONDS, status=200)
            # From now on the checkout is gone: whatever answers comes from the installed release.
            shutil.rmtree(checkout)
            home_page = requests.get(f"{url}/", timeout=30)
            css = requests.get(f"{url}/static/css/portal.css", timeout=30)
            settings = dict(
                line.split("=", 1)
                for line in (home / "portal.env").read_text(encoding="utf-8").splitlines()
                if line and not line.startswith("#")
            )
            token = settings["PORTAL_METRICS_TOKEN"]
            metrics = requests.get(
                f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30
            )

    assert ready.json()["status"] == "ready", ready.text
    output = log.read_text(encoding="utf-8", errors="replace")
    assert "All checks passed" in output, output[-5000:]
    assert home_page.status_code == 200 and HOME_PAGE_TEXT in home_page.text
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert metrics.status_code == 200, metrics.text[:500]
    assert "portal_http_request_duration_seconds_count" in metrics.text
    assert settings["PORTAL_INSTANCE_PATH"] == str(home / "instance")
    assert (home / "instance").is_dir()
    assert stat.S_IMODE((home / "portal.env").stat().st_mode) == 0o600
    assert len(settings["SECRET_KEY"]) >= 48
    venv = home / "venv"
    package = imported_portal(str(venv / "bin" / "python"), home, host_environ(venv, {}))
    assert package.is_relative_to(venv.resolve()) and "site-packages" in package.parts, package
    assert (package / "templates").is_dir() and (package / "static").is_dir()
