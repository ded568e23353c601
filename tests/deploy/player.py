"""Play the deployment's containers on this machine as a cluster or Compose would run them, with
no cluster and no Docker daemon: each container's command and args as written, its environment
from the manifests, as the image's non-root user in a root-owned copy of the tree laid out as the
Dockerfile lays out the image, and its probes asked as the kubelet asks them.

What stands in for what:
- the image: `ImageTree`, the Dockerfile's COPY sources under `<root>/app` (its WORKDIR), the
  folders it hands its user (`chown`) and the user's home, every other folder root's; the
  project's virtual environment for the image's Python and packages (PYTHONPATH names the copy,
  as the image's editable install does);
- the user: the Dockerfile's uid, through `setpriv`, when the tests run as root; when the
  interpreter lives where that user cannot read (pyenv under /root) it is given
  CAP_DAC_READ_SEARCH, which reads but never writes. Run as another user, the tests run the
  processes as that user in a copy made read-only;
- the pod's network: each container port moves to a free port of this machine, in the command,
  the environment and the probes alike; `status.podIP` is 127.0.0.1;
- the cluster's Services and Compose's services: URLs naming them become this machine's Redis and
  PostgreSQL; Secrets take the test values the caller gives.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from classifier.management.devstack import free_port, stop_process

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
# How long a process has to answer its probes, and a one-off (a Job, an init container) to
# finish: generous, for a loaded 2-core machine importing torch.
START_TIMEOUT = 180.0


class PlayFailed(AssertionError):
    """A played container exited, or its probes did not answer, when it should have."""

    def __init__(self, name: str, why: str, output: str) -> None:
        super().__init__(f"{name} {why}. Its output ends:\n{output[-4000:]}")
        self.output = output


# --- The image ------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


@dataclass
class ImageTree:
    """A root-owned copy of the tree at `root`, laid out as the Dockerfile builds the image."""

    root: Path
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    uid: int = 0
    home: str = "/"
    owned: list[str] = field(default_factory=list)  # image paths the user owns

    @classmethod
    def build(cls) -> ImageTree:
        root = Path(tempfile.mkdtemp(prefix="digits-played-"))
        root.chmod(0o755)  # mkdtemp's 0700 would keep the user out of the whole tree
        tree = cls(root)
        for keyword, rest in _instructions():
            if keyword == "WORKDIR":
                tree.workdir = rest
            elif keyword == "ENV":
                tree.env.update(dict(item.split("=", 1) for item in shlex.split(rest)))
            elif keyword == "COPY":
                *sources, destination = shlex.split(rest)
                tree._copy(sources, destination)
            elif keyword == "RUN":
                tree._run(rest)
        for path in tree.owned:
            target = tree.path(path)
            target.mkdir(parents=True, exist_ok=True)
            for item in [target, *target.rglob("*")]:
                os.chown(item, tree.uid, tree.uid)
        if os.geteuid() != 0:
            tree._make_read_only()
        return tree

    def path(self, image_path: str) -> Path:
        """Where an absolute path of the image lies in the copy."""
        return self.root / image_path.lstrip("/")

    def map_path(self, value: str) -> str:
        """An environment value naming a path of the image, as that path in the copy."""
        if value.startswith("/") and (self.root / value.lstrip("/").split("/")[0]).exists():
            return str(self.path(value))
        return value

    def _copy(self, sources: list[str], destination: str) -> None:
        target = self.path(os.path.join(self.workdir, destination))
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for source in sources:
            origin = REPO / source
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=ignore, dirs_exist_ok=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)

    def _run(self, command: str) -> None:
        """The RUN lines that shape the image's files: the user, its home and what it owns."""
        if user := re.search(r"useradd (.*?)--uid (\d+) (\w+)", command):
            self.uid = int(user[2])
            self.home = f"/home/{user[3]}" if "--create-home" in user[1] else "/"
            if self.home != "/":
                self.owned.append(self.home)
        for chown in re.finditer(r"chown -R \w+ ([^&;]+)", command):
            self.owned += chown[1].split()

    def _make_read_only(self) -> None:
        """Not root: no other user to run as, so the copy is made unwritable instead."""
        owned = [self.path(p) for p in self.owned]
        for directory, _, _ in os.walk(self.root):
            path = Path(directory)
            if not any(path == o or o in path.parents for o in owned):
                path.chmod(0o555)

    def remove(self) -> None:
        for directory, _, _ in os.walk(self.root):
            with contextlib.suppress(OSError):
                Path(directory).chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP)
        shutil.rmtree(self.root, ignore_errors=True)


# --- The user -------------------------------------------------------------------------------


def venv_bin() -> Path:
    """The project's virtual environment (this test run's), the image's Python and packages."""
    return Path(sys.executable).parent


def path() -> str:
    """The played processes' PATH: the virtual environment's commands (python, celery) first."""
    return f"{venv_bin()}:/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Runner:
    """How a played process is started as the image's user: the argv prefix."""

    prefix: tuple[str, ...]

    @classmethod
    def for_image(cls, tree: ImageTree) -> Runner:
        if os.geteuid() != 0:
            return cls(())
        drop = (
            "setpriv", f"--reuid={tree.uid}", f"--regid={tree.uid}", "--clear-groups",
        )  # fmt: skip
        read_only = ("--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search")
        for prefix in (drop, (*drop, *read_only)):
            check = subprocess.run(
                [*prefix, "python", "-c", "import django"],
                env={"PATH": path()},
                capture_output=True,
                check=False,
            )
            if check.returncode == 0:
                return cls(prefix)
        raise RuntimeError(
            f"cannot run the project's Python as uid {tree.uid}: {check.stderr.decode()}"
        )


# --- The environment ------------------------------------------------------------------------


def replace_services(value: str, services: dict[str, str]) -> str:
    """A URL whose host is one of the cluster's (or Compose's) services, as this machine's."""
    with contextlib.suppress(ValueError):
        parts = urlsplit(value)
        if parts.scheme and parts.hostname in services:
            return services[parts.hostname]
    return value


def move_ports(value: str, ports: dict[int, int]) -> str:
    """`value` with each of the pod's ports, as a number on its own, moved to this machine's."""
    for inside, outside in ports.items():
        value = re.sub(rf"(?<![\d.]){inside}(?!\d)", str(outside), value)
    return value


def kubernetes_env(
    spec: dict[str, Any], config_maps: dict[str, dict[str, str]], secrets: dict[str, str]
) -> dict[str, str]:
    """A container's environment as the kubelet builds it: envFrom, then env in order, with
    $(NAME) naming an earlier variable. `secrets` maps "secret/key" to a test value; a Secret
    key it lacks is left out, as for a Secret not created yet (the pod would not start)."""
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]])
        if "secretRef" in source:
            prefix = source["secretRef"]["name"] + "/"
            env.update(
                {k.removeprefix(prefix): v for k, v in secrets.items() if k.startswith(prefix)}
            )
    for item in spec.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), str(item["value"])
            )
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            if f"{ref['name']}/{ref['key']}" in secrets:
                env[item["name"]] = secrets[f"{ref['name']}/{ref['key']}"]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[item["name"]] = config_maps[ref["name"]][ref["key"]]
        elif source.get("fieldRef", {}).get("fieldPath") == "status.podIP":
            env[item["name"]] = "127.0.0.1"
        else:
            raise NotImplementedError(f"{item['name']}: {source}")
    return env


def interpolate(value: str, environ: dict[str, str]) -> str:
    """Compose's interpolation of `${NAME}`, `${NAME:-default}`, `${NAME-default}`,
    `${NAME:?error}` and `${NAME?error}` (an error raises, as Compose refuses the whole file)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        current = environ.get(name)
        unset = current is None or (op.startswith(":") and current == "")
        if op.endswith("-"):
            return arg if unset else str(current)
        if op.endswith("?"):
            if unset:
                raise ValueError(f"Compose refuses the file: {name}: {arg}")
            return str(current)
        return current or ""

    pattern = r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    return re.sub(pattern, one, value).replace("$$", "$")


# --- A played process -----------------------------------------------------------------------


@dataclass
class Container:
    """One container to play: its argv and environment as the manifest gives them, its ports,
    its probes (kubelet-style dicts: httpGet, tcpSocket or exec)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ports: list[int] = field(default_factory=list)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    named_ports: dict[str, int] = field(default_factory=dict)


class Player:
    """Starts containers in one `ImageTree` as its user, with this machine's services."""

    def __init__(
        self,
        tree: ImageTree,
        services: dict[str, str],
        overrides: dict[str, str],
        logs: Path,
    ) -> None:
        self.tree = tree
        self.runner = Runner.for_image(tree)
        self.services = services
        self.overrides = overrides
        self.logs = logs
        self.running: list[Played] = []

    def environment(self, container: Container, ports: dict[int, int]) -> dict[str, str]:
        env = {
            "PATH": path(),
            "HOME": str(self.tree.path(self.tree.home)),
            # The image's `pip install -e .` of its /app.
            "PYTHONPATH": str(self.tree.path(self.tree.workdir)),
            **self.tree.env,
        }
        for name, value in container.env.items():
            value = replace_services(value, self.services)
            env[name] = move_ports(self.tree.map_path(value), ports)
        env.update(self.overrides)
        return env

    def start(self, container: Container) -> Played:
        ports = {port: free_port() for port in container.ports}
        env = self.environment(container, ports)
        argv = [move_ports(arg, ports) for arg in container.argv]
        played = Played(self, container, argv, env, ports)
        self.running.append(played)
        return played

    def run(self, container: Container, timeout: float = START_TIMEOUT) -> Played:
        """Play a one-off (a Job, an init container) to its end; it must exit 0."""
        played = self.start(container)
        code = played.wait(timeout)
        if code != 0:
            raise PlayFailed(container.name, f"exited with code {code}", played.output)
        return played

    def serve(self, container: Container, timeout: float = START_TIMEOUT) -> Played:
        """Play a long-running container until every probe of it answers."""
        played = self.start(container)
        played.wait_for_probes(timeout)
        return played

    def stop_all(self) -> None:
        for played in reversed(self.running):
            played.stop()
        self.running.clear()


class Played:
    """One running (or finished) process, its output in a log file."""

    def __init__(
        self,
        player: Player,
        container: Container,
        argv: list[str],
        env: dict[str, str],
        ports: dict[int, int],
    ) -> None:
        self.player = player
        self.container = container
        self.env = env
        self.ports = ports
        self.log = player.logs / f"{container.name}-{len(player.running)}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [*player.runner.prefix, *argv],
                env=env,
                cwd=player.tree.path(player.tree.workdir),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise PlayFailed(
                self.container.name, f"did not finish within {timeout:.0f} s", self.output
            ) from None

    def wait_for_output(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise PlayFailed(self.container.name, f"never said {text!r}", self.output)
            time.sleep(0.2)

    def wait_for_probes(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise PlayFailed(
                    self.container.name,
                    f"exited with code {code} before its probes answered",
                    self.output,
                )
            failing = [kind for kind, probe in self.container.probes.items() if not self.ask(probe)]
            if not failing:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise PlayFailed(
                    self.container.name,
                    f"did not answer its {', '.join(failing)} within {timeout:.0f} s",
                    self.output,
                )
            time.sleep(0.5)

    def port(self, port: int | str) -> int:
        number = self.container.named_ports[port] if isinstance(port, str) else port
        return self.ports[number]

    def ask(self, probe: dict[str, Any]) -> bool:
        """One probe, as the kubelet asks it: HTTP 200-399, a TCP connect, or a command's 0."""
        if "httpGet" in probe:
            get = probe["httpGet"]
            headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
            connection = http.client.HTTPConnection("127.0.0.1", self.port(get["port"]), timeout=3)
            try:
                connection.request("GET", get.get("path", "/"), headers=headers)
                return 200 <= connection.getresponse().status < 400
            except OSError:
                return False
            finally:
                connection.close()
        if "tcpSocket" in probe:
            try:
                with socket.create_connection(
                    ("127.0.0.1", self.port(probe["tcpSocket"]["port"])), 2
                ):
                    return True
            except OSError:
                return False
        argv = [move_ports(arg, self.ports) for arg in probe["exec"]["command"]]
        check = subprocess.run(
            [*self.player.runner.prefix, *argv],
            env=self.env,
            cwd=self.player.tree.path(self.player.tree.workdir),
            capture_output=True,
            timeout=60,
            check=False,
        )
        return check.returncode == 0

    def stop(self) -> None:
        stop_process(self.process, 20)
