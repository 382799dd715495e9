"""A minimal Language Server Protocol client: JSON-RPC over a real server's stdin and stdout.

Enough of LSP to do what an editor does with yaml-language-server: initialize it,
answer its configuration requests with the editor settings given, open documents,
and read the diagnostics it publishes and the hovers it answers.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

# The settings sections yaml-language-server asks for, in its order.
_SECTIONS = ("yaml", "http", "[yaml]", "editor")


class LanguageServer:
    """One language server process, for one workspace folder; use it as a context manager."""

    def __init__(self, command: list[str], root: Path, yaml_settings: Mapping[str, Any]) -> None:
        self.root = root
        self.yaml_settings = dict(yaml_settings)
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.diagnostics: dict[str, list[dict[str, Any]]] = {}
        self.responses: dict[int, dict[str, Any]] = {}
        self.opened: set[str] = set()
        self.next_id = 1
        assert self.process.stdout is not None
        self.reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self.reader.start()

    def __enter__(self) -> LanguageServer:
        self.request(
            "initialize",
            {
                "processId": None,
                "rootUri": self.root.as_uri(),
                "workspaceFolders": [{"uri": self.root.as_uri(), "name": self.root.name}],
                "capabilities": {"workspace": {"configuration": True}},
            },
        )
        self.notify("initialized", {})
        self.notify("workspace/didChangeConfiguration", {"settings": {"yaml": self.yaml_settings}})
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        try:
            self.request("shutdown", None, timeout=10)
            self.notify("exit", None)
            self.process.wait(timeout=10)
        except (OSError, TimeoutError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            self.reader.join(timeout=10)
            for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()

    # -- the wire --

    def _read(self, stream: IO[bytes]) -> None:
        """Parse ``Content-Length`` framed messages until the server closes its stdout."""
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    self.messages.put(None)
                    return
                if not line.strip():
                    break
                name, _, value = line.decode("ascii").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            assert length is not None, "a message without Content-Length"
            self.messages.put(json.loads(stream.read(length)))

    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        assert self.process.stdin is not None
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def notify(self, method: str, params: Any) -> None:
        self._send({"method": method, "params": params})

    def request(self, method: str, params: Any, timeout: float = 30) -> Any:
        request_id = self.next_id
        self.next_id += 1
        self._send({"id": request_id, "method": method, "params": params})
        self._pump_until(lambda: request_id in self.responses, timeout, f"no answer to {method}")
        return self.responses.pop(request_id).get("result")

    def _pump_until(self, done: Callable[[], bool], timeout: float, failure: str) -> None:
        """Handle the server's messages until ``done()`` holds; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{failure} within {timeout} s")
            try:
                message = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            if message is None:
                assert self.process.stderr is not None
                raise RuntimeError(f"the language server exited: {self.process.stderr.read()!r}")
            self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method == "workspace/configuration":  # the editor's settings, section by section
            sections = [item.get("section") for item in message["params"]["items"]]
            result = [self.yaml_settings if s == "yaml" else {} for s in sections]
            self._send({"id": message["id"], "result": result})
        elif method == "textDocument/publishDiagnostics":
            params = message["params"]
            self.diagnostics[params["uri"]] = params["diagnostics"]
        elif "method" in message and "id" in message:  # another request: none is needed here
            self._send({"id": message["id"], "result": None})
        elif "id" in message:
            self.responses[message["id"]] = message

    # -- what an editor does --

    def open(self, path: Path, text: str) -> str:
        """Open ``text`` as the document at ``path`` (which need not exist); its URI."""
        uri = path.as_uri()
        if uri in self.opened:  # an editor closes a document before opening it again
            self.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
        self.opened.add(uri)
        self.diagnostics.pop(uri, None)
        document = {"uri": uri, "languageId": "yaml", "version": 1, "text": text}
        self.notify("textDocument/didOpen", {"textDocument": document})
        return uri

    def diagnostics_of(self, uri: str, timeout: float = 30) -> list[dict[str, Any]]:
        """The diagnostics the server publishes for ``uri`` (it publishes once it validated)."""
        self._pump_until(lambda: uri in self.diagnostics, timeout, f"no diagnostics for {uri}")
        return self.diagnostics[uri]

    def hover(self, uri: str, line: int, character: int) -> str:
        result = self.request(
            "textDocument/hover",
            {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}},
        )
        contents = (result or {}).get("contents", "")
        return str(contents.get("value", "") if isinstance(contents, dict) else contents)
