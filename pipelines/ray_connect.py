"""Which Ray a run uses: a private local instance, or a cluster it joins, with one clear line
when joining fails (nobody listening, an address Ray cannot parse, a refused token).

Ray 2.60's token authentication: a cluster started with RAY_AUTH_MODE=token (or where
~/.ray/auth_token existed) refuses clients without its token. A client that sends none, or the
wrong one, only sees ray.init retry for ~20 s and end with "Failed to connect"; so before
ray.init we ask the cluster's GCS one cheap question, which a token cluster answers with
UNAUTHENTICATED at once.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from synthface.errors import ConfigError

AUTH_HINT = (
    "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<the cluster's token> (or RAY_AUTH_TOKEN_PATH=<a file "
    "holding it>) for this process; the head node has the token in ~/.ray/auth_token unless `ray start` got "
    "it from one of those variables; see docs/cluster.md, 'Ray token authentication'"
)


def init_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Start a private local Ray (address None) or join a cluster; True if we started it.

    Local means local: without an address (or RAY_ADDRESS, which `ray job submit` sets),
    a cluster started with `ray start` on this machine, or a stale
    /tmp/ray/ray_current_cluster file it left, is neither joined nor a problem.
    """
    import ray
    from ray.exceptions import AuthenticationError

    if ray.is_initialized():
        return False
    # FSSPEC_* settings go to the workers with the actor options (runtime envs merge env_vars
    # there); given to ray.init as well they conflict with a `ray job submit --runtime-env-json`
    # that sets them, and the job fails on a runtime-env merge error
    # inside `ray job submit` Ray sets RAY_ADDRESS: join that cluster
    given = address
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        where = f"--ray-address {address}" if given else f"RAY_ADDRESS={address}"
        if address != "auto":
            _check_reachable(address, where)
            _check_token(address, where)
        try:
            ray.init(address=address, log_to_driver=True)
        except ConnectionError as exc:  # 'auto' with no cluster running here, or a cluster that went away
            raise ConfigError(f"{where}: {str(exc).splitlines()[0]}") from None
        except ValueError as exc:  # not an address Ray understands
            raise ConfigError(
                f"{where}: {str(exc).splitlines()[0]} (expected 'auto', HOST:PORT or ray://HOST:PORT)"
            ) from None
        except (AuthenticationError, RuntimeError) as exc:
            text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            if isinstance(exc, AuthenticationError) or "auth" in str(exc).lower() or "token" in str(exc).lower():
                raise ConfigError(f"{where}: Ray refused the connection ({text}); {AUTH_HINT}") from None
            raise
    else:
        # Light on a laptop: no dashboard, only the CPUs we have; "local" never joins a running cluster.
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            log_to_driver=True,
            configure_logging=False,
        )
    return True


def _check_reachable(address: str, where: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a host:port nobody listens on (ray.init would retry for minutes)."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        return  # not host:port; let Ray judge it
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"{where}: no Ray cluster answers at {host}:{port} ({exc.strerror or exc})") from None


def _check_token(address: str, where: str, timeout_s: float = 10.0) -> None:
    """Ask the GCS at HOST:PORT for its cluster id, with the token ray.init would send (none
    unless RAY_AUTH_MODE=token). UNAUTHENTICATED is one line saying how to pass the token;
    any other answer (not a GCS, a slow cluster) is left to ray.init."""
    if "://" in address:
        return  # ray://: Ray Client speaks another protocol
    try:
        import grpc
        from ray._private.grpc_utils import init_grpc_channel  # adds the token header as ray.init would
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
        from ray.exceptions import AuthenticationError
    except ImportError:  # another Ray's layout: ray.init's own errors stand
        return
    try:
        channel = init_grpc_channel(address)
        try:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s
            )
        finally:
            channel.close()
    except AuthenticationError as exc:  # this process's token settings are unusable (a token file that is not there)
        raise ConfigError(f"{where}: {str(exc).split('. ')[0]}; {AUTH_HINT}") from None
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise ConfigError(f"{where}: {_refusal()}; {AUTH_HINT}") from None


def _refusal() -> str:
    """Why a token cluster refused us, from the settings Ray read (its order of precedence)."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return "the Ray cluster uses token authentication and this process sent no token (RAY_AUTH_MODE is not 'token' here)"
    if os.environ.get("RAY_AUTH_TOKEN"):
        source = "RAY_AUTH_TOKEN"
    elif os.environ.get("RAY_AUTH_TOKEN_PATH"):
        source = f"RAY_AUTH_TOKEN_PATH={os.environ['RAY_AUTH_TOKEN_PATH']}"
    elif (Path.home() / ".ray" / "auth_token").is_file():
        source = str(Path.home() / ".ray" / "auth_token")
    else:
        return ("the Ray cluster uses token authentication and this process has no token "
                "(RAY_AUTH_MODE=token, but no RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")
    return f"the Ray cluster uses token authentication and refused the token of {source}: it is not the cluster's token"
