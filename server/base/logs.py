"""Log output: text or JSON lines, request ids, and credential redaction.

Events that operators search and count (one per request, one per sync) are
logged with :func:`log_event`: a name plus flat fields. The text format shows
them as ``event key=value ...``; the JSON format as one object per line with
the fields as keys, so a log pipeline needs no parsing rules. Both formatters
pass every finished line through :func:`redact`, the last line of defence
against a URL credential that some library put in a message.

What is never given to a logger here: request bodies, query strings, headers,
and environment values of workers (only the names of variables a rule read).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

import orjson

from .redact import redact

Fields = Mapping[str, str | int | float | bool | list[str] | None]

# An incoming X-Request-Id is kept only when it looks like an id: no spaces, no
# control characters, nothing that could forge a log line or carry a payload.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/+=-]{0,127}$")
# A value with a blank, a quote or a control character (an ANSI escape in a commit
# subject) is written JSON-quoted, so that lines split cleanly and nothing is forged.
_NEEDS_QUOTES = re.compile(r'[\s"\x00-\x1f\x7f-\x9f]')
REQUEST_ID_HEADER = "X-Request-Id"


def request_id_from(incoming: str | None) -> str:
    """The caller's request id when it is sane, else a fresh one."""
    if incoming is not None and _REQUEST_ID_RE.match(incoming):
        return incoming
    return os.urandom(16).hex()  # as random as uuid4().hex, in a fifth of the time


class _KeyValues:
    """Formats ``event k=v ...`` only when a handler actually emits the record."""

    __slots__ = ("event", "fields")

    def __init__(self, event: str, fields: Fields) -> None:
        self.event = event
        self.fields = fields

    def __str__(self) -> str:
        parts = [self.event]
        for key, value in self.fields.items():
            if value is None:
                text = "-"
            elif isinstance(value, bool):
                text = str(value).lower()
            elif isinstance(value, float):
                text = f"{value:.2f}"
            elif isinstance(value, list):
                text = json.dumps(value)  # one line: newlines inside become \n
            else:
                text = str(value)
                if not text or _NEEDS_QUOTES.search(text):
                    text = json.dumps(text)
            parts.append(f"{key}={text}")
        return " ".join(parts)


def log_event(logger: logging.Logger, level: int, event: str, fields: Fields) -> None:
    """Log one named event with flat fields (rendered by the configured format)."""
    if logger.isEnabledFor(level):
        logger.log(level, "%s", _KeyValues(event, fields))


class TextFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        tag = "" if worker is None else f"[worker {worker}] "
        super().__init__(f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, then the event's fields or message."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if self._worker is not None:
            line["worker"] = self._worker
        message = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if record.msg == "%s" and isinstance(message, _KeyValues):
            line["event"] = message.event
            # Log pipelines key on "message": the event as the text format writes it.
            line["message"] = str(message)
            line.update(message.fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        try:
            text = orjson.dumps(line, default=str).decode()
        except TypeError:  # e.g. a lone surrogate, which orjson refuses: escape it, as ASCII
            text = json.dumps(line, default=str)
        return redact(text)


def configure_logging(level: str, log_format: str = "text", worker: int | None = None) -> None:
    """Log to stderr; ``worker`` tags each line with its process's index (--workers N)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(worker) if log_format == "json" else TextFormatter(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Neither format shows thread or process names: skip looking them up for every record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # GitPython logs every command line at debug, URLs included; keep it quiet.
    logging.getLogger("git").setLevel(logging.WARNING)
    # aiohttp's own access log is replaced by ours (request ids, no query strings).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
