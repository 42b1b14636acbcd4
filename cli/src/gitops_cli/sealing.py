"""`gitops seal`: turn a Secret into a SealedSecret that is safe to commit, as kubeseal does.

The flags are kubeseal's, so its users need learn nothing new: ``--cert FILE|URL`` (or
``SEALED_SECRETS_CERT``), ``--scope``, ``--raw`` with ``--name``/``--namespace``/
``--from-file``, ``--fetch-cert``; ``--controller-url`` replaces kubeseal's in-cluster lookup
of the controller with the deployer's HTTP address. The Secret is read from ``-f FILE`` or
standard input (YAML or JSON); the SealedSecret is written as YAML to standard output.

A Secret's values must never be shown back: error messages name keys, lines and columns, never
the text of the input (a YAML parser's own messages quote it, so they are not passed on).
"""

from __future__ import annotations

import asyncio
import datetime
import io
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from gitops_sealing import certs, sealed
from gitops_sealing.sealed import Scope

_MAX_INPUT_BYTES = 4 * 1024 * 1024
"""More than a Secret can hold (the API server's limit is 1 MiB)."""


def _fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error for a person (never a traceback, never a value) and give the exit."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _read_input(path: Path | None) -> bytes:
    """The bytes of ``path``, or of standard input when it is None or ``-``."""
    try:
        if path is None or str(path) == "-":
            data = sys.stdin.buffer.read(_MAX_INPUT_BYTES + 1)
        else:
            with path.open("rb") as stream:
                data = stream.read(_MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > _MAX_INPUT_BYTES:
        raise _fail(f"{path or 'standard input'} is larger than any Secret can be")
    return data


def _parse_secret(data: bytes, source: str) -> dict[str, Any]:
    """The one Secret manifest in YAML or JSON text; errors give positions, never text."""
    try:
        documents = [doc for doc in YAML(typ="safe", pure=True).load_all(data) if doc is not None]
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _fail(f"{source} is not valid YAML or JSON{where}") from None
    except (YAMLError, UnicodeDecodeError):
        raise _fail(f"{source} is not valid YAML or JSON") from None
    if len(documents) != 1:
        raise _fail(f"{source} must hold exactly one Secret, found {len(documents)} documents")
    if not isinstance(documents[0], dict):
        raise _fail(f"{source} does not hold a Secret manifest")
    return documents[0]


def _certificate_pem(cert: str | None, controller_url: str | None) -> tuple[bytes, str]:
    """The certificate's PEM and a name for it: from --cert (file or URL) or the controller."""
    if cert is None and controller_url is None:
        raise _fail(
            "say where the certificate is: --cert FILE|URL, or --controller-url URL "
            "(the deployer's HTTP address)",
            2,
        )
    if cert is not None and not cert.startswith(("http://", "https://")):
        path = Path(cert.removeprefix("file://"))
        try:
            return path.read_bytes(), str(path)
        except OSError as exc:
            raise _fail(f"cannot read the certificate {path}: {exc.strerror}") from None
    url = cert or f"{str(controller_url).rstrip('/')}{certs.CERT_PATH}"
    try:
        return asyncio.run(certs.fetch_certificate_pem(url)), certs.redact_url(url)
    except certs.CertificateError as exc:
        raise _fail(str(exc)) from None


def _dump_yaml(manifest: dict[str, Any]) -> str:
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 1 << 20  # a sealed value stays on one line, as kubeseal writes it
    out = io.StringIO()
    yaml.dump(manifest, out)
    return out.getvalue()


def seal(
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", help="The Secret manifest (YAML or JSON); '-' or absent: stdin."
        ),
    ] = None,
    cert: Annotated[
        str | None,
        typer.Option(
            "--cert",
            envvar="SEALED_SECRETS_CERT",
            help="The sealing certificate: a PEM file or an http(s) URL.",
        ),
    ] = None,
    controller_url: Annotated[
        str | None,
        typer.Option(
            "--controller-url", help="The deployer's HTTP address; its /v1/cert.pem is used."
        ),
    ] = None,
    scope: Annotated[
        Scope | None,
        typer.Option(
            "--scope",
            case_sensitive=False,
            help="Where the values may be opened. Default: as the Secret's annotations say, "
            "else strict.",
        ),
    ] = None,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw", help="Seal one value (from --from-file or stdin) and print it alone."
        ),
    ] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="The Secret's name (overrides the input's).")
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option("--namespace", "-n", help="The Secret's namespace (overrides the input's)."),
    ] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from-file", help="With --raw: the file holding the value.")
    ] = None,
    fetch_cert: Annotated[
        bool, typer.Option("--fetch-cert", help="Print the certificate and exit.")
    ] = False,
    allow_empty_data: Annotated[
        bool, typer.Option("--allow-empty-data", help="Seal a Secret that has no values.")
    ] = False,
) -> None:
    """Seal a Secret with the cluster's certificate into a SealedSecret to commit to Git."""
    pem, source = _certificate_pem(cert, controller_url)
    if fetch_cert:
        sys.stdout.buffer.write(pem)
        return
    try:
        public_key = certs.sealing_key(pem, datetime.datetime.now(datetime.UTC), source=source)
    except certs.CertificateError as exc:
        raise _fail(str(exc)) from None
    if raw:
        if file is not None:
            raise _fail("--raw seals one value from --from-file or stdin; -f is for a Secret", 2)
        value = _read_input(from_file)
        try:
            sealed_value = sealed.seal_value(
                public_key,
                value,
                scope=scope or Scope.STRICT,
                namespace=namespace or "",
                name=name or "",
            )
        except sealed.InvalidSecretError as exc:
            raise _fail(f"{exc} (pass --namespace and --name, or another --scope)", 2) from None
        # Like kubeseal --raw: the bare value, without a newline, to paste into a manifest.
        sys.stdout.write(sealed_value)
        return
    if from_file is not None:
        raise _fail("--from-file goes with --raw; a Secret is read with -f", 2)
    source_name = str(file) if file is not None and str(file) != "-" else "standard input"
    secret = _parse_secret(_read_input(file), source_name)
    try:
        manifest = sealed.seal_secret(
            secret,
            public_key,
            scope=scope,
            name=name,
            namespace=namespace,
            allow_empty_data=allow_empty_data,
        )
    except sealed.InvalidSecretError as exc:
        raise _fail(f"{source_name}: {exc}") from None
    sys.stdout.write(_dump_yaml(manifest))
