"""Benchmark targets: a table of target kinds and the parser of ``--target`` strings.

Valid forms::

    local                       this machine, in a child process
    ssh://[user@]host[:port]    a Linux board over SSH (Raspberry Pi, Jetson, ...)
    coral[:usb|:pci][:N]        an Edge TPU attached to this machine (N: device index)
    android[:SERIAL]            an Android device over adb (SERIAL from 'adb devices')

Target text ends up on command lines of ssh and adb, so every part is checked against a
strict character set here, and nothing may start with ``-`` (it would be read as an
option).

A target string is parsed once, where it enters: the CLI's ``--target`` type, the recipe's
``bench`` section, or the public entry points that also take text for Python callers
(:func:`~edgecnn.bench.harness.run_benchmark`, :func:`~edgecnn.bench.harness.run_benchmarks`,
:func:`~edgecnn.bench.verify.verify_bundle`). Everything below them takes a
:class:`Target` (see :func:`require_target`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from edgecnn.errors import DeviceError

__all__ = ["Target", "TargetKind", "TARGET_KINDS", "parse_target", "require_target", "target_forms",
           "get_target_kind"]


@dataclass(frozen=True)
class Target:
    """A parsed ``--target``.

    Attributes:
        kind: the :class:`TargetKind` name (``local``, ``ssh``, ``coral``, ``android``).
        text: the target as the user wrote it (recorded in results).
        user: SSH user, or None for the SSH default.
        host: SSH host name or address.
        port: SSH port, or None for the default (22).
        device: Edge TPU device option for ``load_delegate`` (``"usb"``, ``"pci:1"``,
            ``":0"``), or None for the first Edge TPU found.
        serial: adb serial, or None for the only attached device.
    """

    kind: str
    text: str
    user: str | None = None
    host: str | None = None
    port: int | None = None
    device: str | None = None
    serial: str | None = None


@dataclass(frozen=True)
class TargetKind:
    """One row of the target table.

    Attributes:
        name: the kind's name, also the prefix of its target strings.
        form: the syntax, as shown in error messages and help.
        description: one line for people.
        needs_transport: True when the model and runner are copied to another machine.
        parse: turns a target string of this kind into a :class:`Target`; raises
            ``ValueError`` with the problem when the string is malformed.
    """

    name: str
    form: str
    description: str
    needs_transport: bool
    parse: Callable[[str], Target]


_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,252})|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+)$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_SERIAL = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.:-]{0,127}$")


def _parse_local(text: str) -> Target:
    if text != "local":
        raise ValueError("'local' takes no options")
    return Target("local", text)


def _parse_ssh(text: str) -> Target:
    parts = urlsplit(text)
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.password:
        raise ValueError("expected ssh://user@host or ssh://user@host:port, nothing after the port")
    host = parts.hostname
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    if not host or not _HOST.match(host if ":" not in host else f"[{host}]"):
        raise ValueError("the host name is missing or has characters a host name cannot have")
    user = parts.username
    if user is not None and not _USER.match(user):
        raise ValueError("the user name has characters a user name cannot have")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    return Target("ssh", text, user=user, host=host, port=port)


def _parse_coral(text: str) -> Target:
    rest = text[len("coral"):]
    # Device strings as libedgetpu's "device" option takes them: usb, usb:N, pci, pci:N, :N.
    m = re.fullmatch(r"(?::(usb|pci))?(?::(\d{1,3}))?", rest)
    if not m:
        raise ValueError("expected coral, coral:usb, coral:pci, coral:usb:N, coral:pci:N or coral:N")
    bus, index = m.group(1), m.group(2)
    if bus and index is not None:
        device = f"{bus}:{int(index)}"
    elif bus:
        device = bus
    elif index is not None:
        device = f":{int(index)}"
    else:
        device = None
    return Target("coral", text, device=device)


def _parse_android(text: str) -> Target:
    if text == "android":
        return Target("android", text)
    serial = text[len("android:"):]
    if not _SERIAL.match(serial):
        raise ValueError("the serial has characters adb serials do not have "
                         "(see 'adb devices' for the right one)")
    return Target("android", text, serial=serial)


TARGET_KINDS: tuple[TargetKind, ...] = (
    TargetKind("local", "local", "this machine, in a child process", False, _parse_local),
    TargetKind("ssh", "ssh://user@host[:port]", "a Linux board over SSH (e.g. a Raspberry Pi)", True, _parse_ssh),
    TargetKind("coral", "coral[:usb|:pci][:N]", "an Edge TPU attached to this machine", False, _parse_coral),
    TargetKind("android", "android[:SERIAL]", "an Android device over adb (TFLite benchmark_model)", True,
               _parse_android),
)


def target_forms() -> str:
    """The valid target forms, comma-separated (for messages and help)."""
    return ", ".join(k.form for k in TARGET_KINDS)


def get_target_kind(name: str) -> TargetKind:
    """The row called ``name``."""
    for kind in TARGET_KINDS:
        if kind.name == name:
            return kind
    raise KeyError(f"unknown target kind {name!r}; known: {', '.join(k.name for k in TARGET_KINDS)}")


def parse_target(text: str) -> Target:
    """Parse a ``--target`` string.

    Args:
        text: ``local``, ``ssh://user@host[:port]``, ``coral[:usb|:pci][:N]`` or
            ``android[:SERIAL]``.

    Returns:
        The :class:`Target`.

    Raises:
        DeviceError: one line listing the valid forms, with a "did you mean" where the
            text is close to one.
    """
    raw = text if isinstance(text, str) else str(text)
    shown = raw if len(raw) <= 80 else raw[:77] + "..."
    if raw != raw.strip() or not raw:
        raise DeviceError(f"unknown target {shown!r}; valid forms: {target_forms()}")
    kind_name = "ssh" if raw.startswith("ssh://") else raw.split(":", 1)[0]
    for kind in TARGET_KINDS:
        if kind.name == kind_name:
            try:
                return kind.parse(raw)
            except ValueError as exc:
                raise DeviceError(f"bad {kind.name} target {shown!r}: {exc}; form: {kind.form}") from None
    raise DeviceError(f"unknown target {shown!r}; valid forms: {target_forms()}{_suggest(kind_name)}")


def require_target(value: object, caller: str) -> Target:
    """``value`` when it is a :class:`Target`; else a ``TypeError`` naming ``caller`` and the fix.

    Functions below the entry points take parsed targets only, so text is never parsed
    twice on one call path; a string reaching them is a programming error, not bad input.
    """
    if isinstance(value, Target):
        return value
    raise TypeError(f"{caller} takes a Target, not {type(value).__name__} {value!r}; "
                    f"parse the text once with edgecnn.targets.parse_target")


def _suggest(word: str) -> str:
    names = [k.name for k in TARGET_KINDS]
    close = difflib.get_close_matches(word.lower().rstrip("/"), names, n=1, cutoff=0.5)
    if not close and word.lower() in ("ssh", "ssh:", "ssh/"):
        close = ["ssh"]
    return f" (did you mean {close[0]!r}?)" if close else ""
