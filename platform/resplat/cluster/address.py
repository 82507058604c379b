"""Which Ray cluster a command talks to, and how it proves who it is.

A cluster is named by `--address`, else RAY_ADDRESS, else the cluster `resplat cluster up`
recorded; with none of them, commands run locally. The address is the Ray dashboard's
HTTP address (the Jobs API), e.g. http://head:8265. Every request carries Ray's token.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from resplat.errors import InputError

PROBE_TIMEOUT_S = 5.0
TOKEN_HELP = ("set RAY_AUTH_TOKEN to the cluster's token, or RAY_AUTH_TOKEN_PATH to a file holding it "
              "(default ~/.ray/auth_token)")


@dataclass(frozen=True)
class ClusterTarget:
    url: str  # http(s)://host:port of the Jobs API
    source: str  # how it was chosen, for the output: "--address", "RAY_ADDRESS", "cluster up (...)"

    def describe(self) -> str:
        return f"{self.url} (from {self.source})"


def dashboard_url(address: str, *, flag: str = "--address") -> str:
    """`address` as the Jobs API URL; InputError when it cannot be one."""
    text = address.strip()
    if text.startswith("ray://"):
        raise InputError(f"{flag} {address}: resplat submits through Ray's Jobs API; give the dashboard "
                         "address, e.g. http://HEAD:8265")
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or parts.path not in ("", "/"):
        raise InputError(f"{flag} {address}: not an address; expected http://HOST:PORT (the Ray dashboard, "
                         "port 8265 by default)")
    return f"{parts.scheme}://{parts.netloc}"


def auth_token() -> str | None:
    """Ray's token, found the way Ray finds it: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def auth_headers() -> dict[str, str]:
    token = auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def request_json(url: str, path: str, *, timeout: float = PROBE_TIMEOUT_S) -> object:
    """GET `path` from the cluster with the token; one clear InputError for every way it can fail."""
    request = urllib.request.Request(url + path, headers=auth_headers())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        if error.code == 401:
            raise InputError(f"the Ray cluster at {url} wants a token and none was found: {TOKEN_HELP}") from None
        if error.code == 403:
            raise InputError(f"the Ray cluster at {url} refused the token resplat sent: {TOKEN_HELP}") from None
        raise InputError(f"the Ray cluster at {url} answered {path} with HTTP {error.code}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise InputError(f"nothing answers at {url} ({reason}); is the cluster up? "
                         "(`resplat cluster status`)") from None


def check_reachable(target: ClusterTarget) -> None:
    """Within seconds: the Jobs API answers and accepts our token (it checks the token on /api/jobs/)."""
    request_json(target.url, "/api/jobs/")


def inside_ray_job() -> bool:
    """True in the entrypoint of a Ray job (a KubeRay RayJob, `ray job submit`): Ray sets this variable."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def local_ray_address() -> str | None:
    """The address a job that trains in this process gives Ray: inside a Ray job, the cluster it runs in
    ("auto"); elsewhere None, a Ray of its own."""
    return "auto" if inside_ray_job() else None


def resolve(address: str | None, *, allow_local: bool = True) -> ClusterTarget | None:
    """The cluster to use, or None to run in this process. A recorded cluster that is gone is an
    InputError. Inside a Ray job, with no --address, the job trains in place (RAY_ADDRESS there
    is the cluster's own GCS address, not a Jobs API)."""
    from resplat.cluster import head

    if not address and inside_ray_job():
        return _none_or_error(allow_local)
    if address:
        return ClusterTarget(dashboard_url(address), "--address")
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "local":
        return ClusterTarget(dashboard_url(env, flag="RAY_ADDRESS"), "RAY_ADDRESS")
    if env == "local":
        return _none_or_error(allow_local)
    recorded = head.recorded()
    if recorded is not None:
        if not head.is_alive(recorded):
            raise InputError(f"the cluster recorded in {head.state_file()} (resplat cluster up, "
                             f"{recorded.url}) is not running; start it again with `resplat cluster up`, "
                             "or forget it with `resplat cluster down`")
        return ClusterTarget(recorded.url, f"resplat cluster up, {head.state_file()}")
    return _none_or_error(allow_local)


def _none_or_error(allow_local: bool) -> None:
    if not allow_local:
        raise InputError("no Ray cluster: start one with `resplat cluster up`, or give --address "
                         "http://HEAD:8265 (or set RAY_ADDRESS)")
