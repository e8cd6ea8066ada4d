"""Write Hookline filters in Python.

A filter is a module with a ``filter(ctx, batch)`` function (and, if it
checks its config, ``validate_config(config)``)::

    from hookline_filter import retain

    def validate_config(config):
        if not config.get("channels"):
            raise ValueError("set `channels`")

    def filter(ctx, batch):
        return retain(batch, lambda e: not e.channel.startswith("debug-"))

``filter`` returns a verdict (``None`` keeps the batch); any exception it
raises becomes the call's ``err``, handled by the webhook's ``on_error``.
Build it with ``hookline-filter-py build filter.py -o filter.wasm``. The
module runs natively too, so its tests are plain ``pytest``/``unittest``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Optional, Union

__all__ = [
    "Batch",
    "Context",
    "Drop",
    "Event",
    "Keep",
    "Replace",
    "Select",
    "Verdict",
    "drop",
    "keep",
    "log",
    "replace",
    "retain",
    "select",
]


@dataclass
class Event:
    """One Pusher webhook event. Missing optional fields are ``None``."""

    name: str
    channel: str
    user_id: Optional[str] = None
    socket_id: Optional[str] = None
    #: client_event: the client event's own name.
    event: Optional[str] = None
    #: client_event: the data, when it is a JSON string.
    data: Optional[str] = None
    subscription_count: Optional[int] = None
    #: Every other field (and a non-string ``data``), parsed.
    extra: Optional[dict] = None


@dataclass
class Batch:
    time_ms: int
    events: List[Event] = field(default_factory=list)


@dataclass
class Context:
    """Where the batch is going."""

    app_id: str
    #: The webhook's id (by default its url or lambda_function).
    webhook: str
    #: The filter's ``config`` from the app file, parsed (``None`` if none).
    config: Any = None


@dataclass
class Keep:
    """Deliver the batch unchanged."""


@dataclass
class Drop:
    """Deliver nothing; the reason is logged and counted."""

    reason: str = ""


@dataclass
class Select:
    """Deliver only the events at these distinct indices, in this order."""

    indices: List[int] = field(default_factory=list)


@dataclass
class Replace:
    """Deliver these events instead."""

    events: List[Event] = field(default_factory=list)
    time_ms: Optional[int] = None


Verdict = Union[Keep, Drop, Select, Replace]


def keep() -> Keep:
    return Keep()


def drop(reason: str = "") -> Drop:
    return Drop(str(reason))


def select(indices: Iterable[int]) -> Select:
    return Select([int(i) for i in indices])


def replace(events: Iterable[Event], time_ms: Optional[int] = None) -> Replace:
    return Replace(list(events), time_ms)


def retain(batch: Batch, keep_it: Callable[[Event], bool]) -> Verdict:
    """Keeps the events for which ``keep_it(event)`` is true: ``keep()`` if
    that is all of them, ``drop()`` if none, ``select()`` otherwise. Kept
    events are delivered byte for byte as they arrived."""
    kept = [i for i, event in enumerate(batch.events) if keep_it(event)]
    if len(kept) == len(batch.events):
        return keep()
    if not kept:
        return drop("no event kept")
    return select(kept)


class _Log:
    """The host's log: ``log.info("…")``. Natively, lines go to stderr."""

    sink: Callable[[str, str], None] = staticmethod(
        lambda level, message: print(f"[{level}] {message}", file=__import__("sys").stderr)
    )

    def _emit(self, level: str, parts: tuple) -> None:
        text = " ".join(p if isinstance(p, str) else json.dumps(p) for p in parts)
        _Log.sink(level, text)

    def debug(self, *parts: Any) -> None:
        self._emit("debug", parts)

    def info(self, *parts: Any) -> None:
        self._emit("info", parts)

    def warn(self, *parts: Any) -> None:
        self._emit("warn", parts)

    def error(self, *parts: Any) -> None:
        self._emit("error", parts)


log = _Log()
