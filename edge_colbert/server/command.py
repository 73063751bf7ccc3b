"""The ``edge-colbert serve DB`` subcommand: the search page and HTTP API on this machine.

The port is bound here, before the model loads, so that a port in use or a host that does
not resolve is one clear line at once; uvicorn then serves on that very socket (no gap in
which another program could take the port).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import socket
import sys

from edge_colbert.cli import PROG, _encoder, _existing_index, _open_index, _out, _say, _warn
from edge_colbert.errors import InvalidInputError

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "bind_socket", "is_loopback", "register"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
# Connections that may wait for the server to accept them (uvicorn's default).
BACKLOG = 2048
# Seconds Ctrl-C waits for requests in flight before closing their connections.
GRACEFUL_SECONDS = 3


def _port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(
            f"ports run from 1 to 65535 (0: any free one); got {number}"
        )
    return number


def register(commands: argparse._SubParsersAction, shared: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    """Add ``serve`` to the ``edge-colbert`` parser."""
    serve = commands.add_parser(
        "serve",
        parents=[shared],
        help="search an index from a web page and an HTTP API",
        description="Serve DB read-only on http://HOST:PORT/: a search page, a JSON API under "
        "/api/ and its OpenAPI page at /docs. It follows what `index` or `watch` writes "
        "meanwhile. Needs the server extra: pip install 'edge-colbert[server]'.",
    )
    serve.add_argument("db", metavar="DB", help="the index file")
    serve.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}: this machine only)",
    )
    serve.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host that other machines can reach (the server has no login)",
    )
    serve.set_defaults(func=run_serve)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening, for uvicorn to serve on.

    Raises:
        InvalidInputError: the port is taken or reserved, or the host is not an address
            of this machine.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise InvalidInputError(
            f"--host {host}: cannot resolve it ({error.strerror}); give an address such as "
            f"{DEFAULT_HOST}"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        # Lets a restarted server take its port back at once from connections in TIME_WAIT;
        # on Linux it never lets two servers listen on one port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        # Listening from here on, so the address printed next takes connections at once
        # (they wait in the backlog until the app has started).
        sock.listen(BACKLOG)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise InvalidInputError(
                f"port {port} on {host} is already in use (another `{PROG} serve`?); stop that "
                f"program or pick another port, e.g. --port {port + 1 if port < 65535 else 8765}"
            ) from None
        if error.errno == errno.EACCES:
            raise InvalidInputError(
                f"port {port} is reserved for the system administrator; pick one above 1023, "
                f"e.g. --port {DEFAULT_PORT}"
            ) from None
        if error.errno == errno.EADDRNOTAVAIL:
            raise InvalidInputError(
                f"--host {host} is not an address of this machine; use {DEFAULT_HOST}, or "
                "0.0.0.0 with --allow-remote for every address"
            ) from None
        raise
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def run_serve(args: argparse.Namespace) -> int:
    """Serve ``args.db`` until Ctrl-C; returns the exit code."""
    from edge_colbert.server import require_server_extra

    require_server_extra()
    path = _existing_index(args.db)
    sock = bind_socket(args.host, args.port)
    try:
        # Judged on the address bound, so that a name resolving to 127.0.x.x counts as local.
        loopback = is_loopback(args.host) or is_loopback(str(sock.getsockname()[0]))
        if not loopback and not args.allow_remote:
            raise InvalidInputError(
                f"--host {args.host} would let other machines read {args.db} (the server has "
                f"no login); add --allow-remote if you mean it, or keep --host {DEFAULT_HOST}"
            )
        import uvicorn

        from edge_colbert.server.app import create_app
        from edge_colbert.server.service import SearchService

        encoder = _encoder(args)
        with _open_index(path, encoder, readonly=True) as index:
            service = SearchService(index, encoder)
            app = create_app(
                service, allowed_hosts=LOOPBACK_NAMES | {args.host} if loopback else None
            )
            if not loopback:
                _warn(
                    f"{PROG}: warning: listening on {args.host}: every machine that can reach "
                    f"this one can search {args.db} and read its text; there is no login"
                )
            verbose = int(getattr(args, "verbose", 0) or 0)
            config = uvicorn.Config(
                app,
                log_level="info" if verbose else "warning",
                access_log=verbose > 1,
                timeout_graceful_shutdown=GRACEFUL_SECONDS,
            )
            server = uvicorn.Server(config)
            # Printed even with -q: with --port 0 it is the only way to learn the address.
            _out(f"serving {args.db} on {_url(sock)}  (API: {_url(sock)}docs; Ctrl-C stops)")
            sys.stdout.flush()
            # uvicorn re-raises the Ctrl-C it handled, once the server has already stopped.
            with contextlib.suppress(KeyboardInterrupt):
                server.run(sockets=[sock])
    finally:
        sock.close()
    _say(args, "stopped")
    return 0
