"""Shared helpers for the text-dump parsers: reading lines safely and splitting "ip:port"."""

from __future__ import annotations

import json
import re
from pathlib import Path

MAX_TEXT_BYTES = 512 * 1024 * 1024

# logrus preambles that calico-node / calico-bpf print before their data, e.g.
# `INFO[0000] FIPS mode enabled=false source="main.go:137"` or `2024-01-02 03:04:05.678 [INFO][12] ...`
LOG_LINE = re.compile(
    r"^(?:(?:TRAC|DEBU|INFO|WARN|WARNING|ERRO|FATA|PANI)\[\d+\]|\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\S*\s+\[[A-Z]+\])"
)


# what `kubectl exec` prints before a command's output (to the combined output calicoctl keeps)
KUBECTL_NOTICE = re.compile(
    r"^(?:Defaulted container \"|Unable to use a TTY|command terminated with exit code \d+|"
    r"Defaulting container name to )"
)


def preamble(line: str, no: int, log) -> bool:
    """A log or `kubectl exec` line before or inside a dump (logrus lines of calico-node, calico-bpf,
    Felix or confd; kubectl's notices): recorded as an anomaly and skipped, never taken for the end
    of the dump. ``log``: the parser's AnomalyLog."""
    s = line.strip()
    if LOG_LINE.match(s):
        log.add(no, "log_line_skipped", s[:200])
        return True
    if KUBECTL_NOTICE.match(s):
        log.add(no, "notice_skipped", s[:200])
        return True
    return False


def read_lines(path: str | Path, limit: int = MAX_TEXT_BYTES) -> list[str]:
    """Read a text file as lines: undecodable bytes replaced, CRLF (from `kubectl exec -t`) removed."""
    with open(path, "rb") as fh:
        raw = fh.read(limit)
    text = raw.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def split_hostport(s: str) -> tuple[str, int]:
    """Split `10.0.0.1:80`, `[fd00::1]:80` or `fd00::1:80` (last colon) into (ip, port); port -1 if absent."""
    s = s.strip()
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port.isdigit() else -1
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit():
        return s, -1
    return host, int(port)


MAX_JSON_BYTES = 256 * 1024 * 1024
MAX_JSON_DEPTH = 64
JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
JSON_BRACKET = re.compile(r"[\[\]{}]")


def load_json_bounded(text: str, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> object:
    """json.loads with the bounds archives have: a document over ``max_bytes`` or nested deeper than
    ``max_depth`` is refused with ValueError before it is parsed (a deep one would exhaust the
    parser's recursion). Malformed JSON raises ValueError too (JSONDecodeError is one)."""
    check_json_bounds(text, max_bytes, max_depth)
    return json.loads(text)


def check_json_bounds(text: str, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> None:
    """ValueError if a JSON document is over ``max_bytes`` or nested deeper than ``max_depth``."""
    if len(text) > max_bytes:
        raise ValueError(f"JSON document of {len(text)} bytes is over the {max_bytes}-byte bound")
    depth = deepest = 0
    for m in JSON_BRACKET.finditer(JSON_STRING.sub('""', text)):
        depth += 1 if m.group() in "[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > max_depth:
                raise ValueError(f"JSON nested deeper than {max_depth} levels")
