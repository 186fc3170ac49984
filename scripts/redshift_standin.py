#!/usr/bin/env python3
"""A Redshift stand-in for tests: a wire-protocol proxy in front of the local stack's PostgreSQL.

    .venv/bin/python scripts/redshift_standin.py [--port 5439] [--tls-cert F --tls-key F]

`scripts/stack` runs it as the `redshift` service on 127.0.0.1:$S3RS_STACK_REDSHIFT_PORT (5439).
By hand, source `.stack/stack.env` first: it reads POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER,
POSTGRES_PASSWORD (the server behind it, and its own connections), REDSHIFT_DATABASE (where its
system tables are created at start-up, default `dev`), REDSHIFT_IAM_ROLE (the one role COPY may
assume), S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION (where COPY
reads). Connect with redshift-connector as to Redshift:
`redshift_connector.connect(host=, port=, database=, user=, password=, ssl=False)`, or with the
default `ssl=True` when the process trusts the stand-in's CA: SSL_CERT_FILE=$REDSHIFT_SSL_ROOT_CERT.

This is test infrastructure, not a product: it exists so that the project's `redshift` warehouse
backend runs end to end in CI without AWS. It emulates what that backend touches, and fails loudly
(SQLSTATE 0A000, "Redshift stand-in: ... is not supported") where it does not.

What it emulates
  * The connection: redshift-connector's Redshift-only startup parameters are dropped (only those
    PostgreSQL knows are passed on), SSL is answered (TLS when given a certificate, else 'N'),
    md5 authentication passes through, and `server_version` reads "8.0.2" as on Redshift. With
    that version redshift-connector, like against Redshift, does not take row counts from COPY
    or SELECT command tags: `cursor.rowcount` is -1 after a COPY. Use `pg_last_copy_count()`
    (and `pg_last_copy_id()`), which the stand-in provides with Redshift's meaning: rows loaded by
    the session's last COPY, 0 when it failed while loading. `--server-version` changes the
    reported version (e.g. "9.0" makes the driver count COPY rows like against PostgreSQL).
  * DDL and types: VARBYTE(n) / VARBINARY(n) / BINARY VARYING(n) -> BYTEA, SUPER -> TEXT,
    NVARCHAR -> VARCHAR, VARCHAR(MAX) -> VARCHAR(65535), in every statement (simple Query and
    extended-protocol Parse), never inside string literals, quoted identifiers or comments.
    In CREATE TABLE, PRIMARY KEY, UNIQUE and FOREIGN KEY constraints are informational, as on
    Redshift: they are not created (a primary key's columns stay NOT NULL), so duplicate keys load;
    DISTSTYLE, DISTKEY, SORTKEY, ENCODE and BACKUP attributes are accepted and ignored.
  * COPY from S3, inside the client's own session and transaction:
        COPY <table> [(<col>, ...)] FROM 's3://bucket/key' <auth> FORMAT [AS] PARQUET [MANIFEST]
    with options in any order, auth one of IAM_ROLE '<arn>' | IAM_ROLE DEFAULT |
    ACCESS_KEY_ID '..' SECRET_ACCESS_KEY '..' [SESSION_TOKEN '..'] | CREDENTIALS [AS] '..', and
    optionally REGION [AS] '..', MAXERROR [AS] 0, COMPUPDATE/STATUPDATE [ON|OFF]. The statement
    is rewritten to COPY ... FROM STDIN (CSV); when PostgreSQL asks for the data, the stand-in
    reads the Parquet files from the stack's S3 and streams them itself, so the rows are part of
    the client's transaction (ROLLBACK removes them) and PostgreSQL's "COPY n" reaches the client.
    Without MANIFEST every object under the key prefix is loaded (key order; none is an error);
    with MANIFEST the object is a Redshift manifest whose entries are loaded in order; an entry
    needs `meta.content_length` equal to the object's size (Redshift requires it for Parquet); a
    missing `mandatory` entry is an error, a missing optional one is skipped. Parquet column i
    loads into table column i (or the i-th listed column); a column-count mismatch is an error.
    Only the role in REDSHIFT_IAM_ROLE may be assumed (DEFAULT means it); access keys must be the
    stack's. Values: NULL stays NULL, '' stays '', binary -> bytea, timestamps as UTC instants,
    decimals exact, booleans, dates, times; nested values as JSON text.
  * Reading VARBYTE: Redshift prints VARBYTE as hex ('0102'), and redshift-connector in production
    hands that text to the caller; the stand-in strips PostgreSQL's '\\x' from bytea results on
    redshift-connector sessions so callers see the same (other clients get PostgreSQL's bytea).
  * Load errors: VARCHAR/CHAR lengths are checked in bytes (Redshift) rather than characters, and
    NUL characters are refused; PostgreSQL's own COPY errors (bad number, NOT NULL, ...) are
    located by their CONTEXT line. Either way the client gets Redshift's "Load into table 'x'
    failed. Check 'sys_load_error_detail' system table for details." (SQLSTATE XX000), its
    transaction is aborted as PostgreSQL aborts it, and one row is written, through the stand-in's
    own autocommitted connection, to `sys_load_error_detail` and to `stl_load_errors` (Redshift's
    columns; session_id / session is the client's backend PID, so `WHERE session_id =
    pg_backend_pid()` finds it; file_name is the s3:// URL, line_number the 1-based row in that
    file, 0 for a file-level error such as a column-count mismatch). Codes: 1202/1203 column
    count, 1204 length, 1205/1206 date/timestamp, 1207 integer, 1208 float, 1209 decimal,
    1210 boolean, 1213 NOT NULL, 1216 other input, 1220 invalid characters, 1222 integer overflow.

What it does not emulate (PostgreSQL 15 semantics apply instead)
  * Anything else Redshift-specific: other COPY sources and formats (CSV, JSON, ...), MAXERROR
    above 0, UNLOAD, IDENTITY(seed, step), system tables and functions other than the ones above,
    `version()`, late-binding views, Redshift's SERIALIZABLE isolation, binary transfer
    (redshift-connector falls back to its text protocol because no `server_protocol_version` is
    reported), IAM/IdP authentication, database users other than PostgreSQL roles.
  * Type details: bare VARCHAR and TEXT are unbounded (VARCHAR(256) on Redshift), VARBYTE lengths
    are not enforced, SUPER is plain text, Parquet-to-column type compatibility is PostgreSQL's
    input parsing (Redshift refuses some pairs PostgreSQL accepts, e.g. a Parquet int into VARCHAR).
    cursor.description shows bytea's type code (17), not VARBYTE's (6551). Python `bytes`
    parameters, which redshift-connector sends as bare hex text, are stored by bytea as those
    characters; write VARBYTE through COPY (or decode('..', 'hex')) in tests.
  * Constraints added by ALTER TABLE are enforced by PostgreSQL.
  * Load-error rows: `transaction_id` is 0 and `slice` 0; `query_id` comes from a counter. The
    Parquet files are read whole into memory (fine for test data, not for huge files).
  * The system tables are ordinary tables in `public` of each database the stand-in loads into
    (created in REDSHIFT_DATABASE at start-up, elsewhere on first COPY); qualify them as
    `public.sys_load_error_detail` when `search_path` leaves out `public`.
  * One S3 COPY per Query message is probed for column types before it runs; a COPY into a table
    created earlier in the same multi-statement Query is checked in bytes only when that table is
    committed (PostgreSQL still checks lengths in characters).

It never logs SQL text, startup parameter values other than user, database and application name,
passwords or keys; its log goes to stdout (the stack writes it to .stack/redshift/redshift.log).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import faulthandler
import hmac
import io
import itertools
import json
import logging
import os
import re
import select
import signal
import socket
import ssl
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

log = logging.getLogger("redshift-standin")

PROTOCOL_V3 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
MAX_MESSAGE_BYTES = 1 << 30
REDSHIFT_SERVER_VERSION = "8.0.2"
PARQUET_BATCH_ROWS = 16384
COPY_DATA_CHUNK = 1 << 20
# Startup parameters that are not PostgreSQL settings but are always valid.
STARTUP_KEYWORDS = {"user", "database", "options", "replication"}
# Settings PostgreSQL accepts at startup, used until pg_settings has been read.
FALLBACK_SETTINGS = {
    "application_name", "client_encoding", "datestyle", "timezone", "extra_float_digits",
    "search_path", "intervalstyle", "statement_timeout", "lock_timeout",
    "idle_in_transaction_session_timeout", "standard_conforming_strings", "bytea_output",
}  # fmt: skip
QUERY_IDS = itertools.count(int(dt.datetime.now(dt.UTC).timestamp() * 10) % 2_000_000_000)
LOAD_FAILED = (
    "Load into table '{table}' failed. Check 'sys_load_error_detail' system table for details."
)
INVALID_CREDENTIALS = (
    "Invalid credentials. Must be of the format: credentials 'aws_iam_role=...' or "
    "'aws_access_key_id=...;aws_secret_access_key=...[;token=...]'"
)


# =========================================================================== settings


@dataclass(frozen=True)
class Settings:
    """Where the stand-in listens, what it forwards to, and the stack's S3 and IAM facts."""

    listen_host: str
    port: int
    postgres_host: str
    postgres_port: int
    postgres_user: str
    postgres_password: str = field(repr=False)
    database: str
    iam_role: str
    s3_endpoint: str
    s3_access_key: str = field(repr=False)
    s3_secret_key: str = field(repr=False)
    region: str
    server_version: str = REDSHIFT_SERVER_VERSION
    tls_cert: str | None = None
    tls_key: str | None = None

    @classmethod
    def from_environment(cls, args: argparse.Namespace) -> Settings:
        env = os.environ

        def need(name: str) -> str:
            value = env.get(name)
            if not value:
                raise SystemExit(f"redshift-standin: {name} is not set (source .stack/stack.env)")
            return value

        return cls(
            listen_host=args.host,
            port=args.port,
            postgres_host=need("POSTGRES_HOST"),
            postgres_port=int(need("POSTGRES_PORT")),
            postgres_user=need("POSTGRES_USER"),
            postgres_password=need("POSTGRES_PASSWORD"),
            database=env.get("REDSHIFT_DATABASE") or "dev",
            iam_role=need("REDSHIFT_IAM_ROLE"),
            s3_endpoint=need("S3_ENDPOINT_URL"),
            s3_access_key=need("AWS_ACCESS_KEY_ID"),
            s3_secret_key=need("AWS_SECRET_ACCESS_KEY"),
            region=env.get("AWS_REGION") or "us-east-1",
            server_version=args.server_version,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )

    @property
    def account_id(self) -> str:
        parts = self.iam_role.split(":")
        return parts[4] if len(parts) > 4 and parts[4] else "123456789012"


# =========================================================================== wire protocol


class ConnectionClosed(Exception):
    """The peer closed its side of the connection."""


class ProtocolError(Exception):
    """Bytes that are not the PostgreSQL v3 protocol."""


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def cstring(data: bytes, start: int = 0) -> tuple[str, int]:
    """The NUL-terminated string at `start` and the offset after it."""
    end = data.index(b"\0", start)
    return data[start:end].decode("utf-8", "replace"), end + 1


def error_fields(body: bytes) -> dict[str, str]:
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def error_body(fields: dict[str, str]) -> bytes:
    """An ErrorResponse body from its fields (S, V, C, M, D, ...)."""
    body = b"".join(k.encode() + v.replace("\0", "").encode() + b"\0" for k, v in fields.items())
    return body + b"\0"


class Wire:
    """One side of a connection: its socket and a receive buffer framed into messages."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self._buf = bytearray()
        self._pos = 0

    def pending(self) -> bool:
        """Decrypted bytes waiting inside the TLS layer (select() cannot see them)."""
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0

    def fill(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionClosed(self.name)
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def read_exact(self, size: int) -> bytes:
        while len(self._buf) - self._pos < size:
            self.fill()
        data = bytes(self._buf[self._pos : self._pos + size])
        self._pos += size
        return data

    def has_message(self) -> bool:
        available = len(self._buf) - self._pos
        if available < 5:
            return False
        length = int.from_bytes(self._buf[self._pos + 1 : self._pos + 5], "big")
        return available >= 1 + length

    def next_message(self) -> tuple[bytes, bytes] | None:
        """The next complete message in the buffer, or None."""
        if len(self._buf) - self._pos < 5:
            return None
        start = self._pos
        length = int.from_bytes(self._buf[start + 1 : start + 5], "big")
        if length < 4 or length > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"bad message length {length} from {self.name}")
        if len(self._buf) - start < 1 + length:
            return None
        kind = bytes(self._buf[start : start + 1])
        body = bytes(self._buf[start + 5 : start + 1 + length])
        self._pos = start + 1 + length
        return kind, body

    def read_message(self) -> tuple[bytes, bytes]:
        while (found := self.next_message()) is None:
            self.fill()
        return found

    def readable_now(self) -> bool:
        """A complete message is buffered, or bytes are waiting on the socket."""
        if self.has_message() or self.pending():
            return True
        ready, _, _ = select.select([self.sock], [], [], 0)
        return bool(ready)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def data_row_values(body: bytes) -> list[str | None]:
    (count,) = struct.unpack_from("!h", body)
    offset, values = 2, []
    for _ in range(count):
        (size,) = struct.unpack_from("!i", body, offset)
        offset += 4
        if size < 0:
            values.append(None)
        else:
            values.append(body[offset : offset + size].decode("utf-8", "replace"))
            offset += size
    return values


# =========================================================================== SQL


@dataclass(frozen=True)
class Token:
    kind: str  # space comment string estring qident param dollar word number other
    text: str

    @property
    def significant(self) -> bool:
        return self.kind not in ("space", "comment")

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.lower() in words

    def is_op(self, text: str) -> bool:
        return self.kind == "other" and self.text == text


_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>--[^\n]*)
    | (?P<block>/\*)
    | (?P<estring>[eE]'(?:[^'\\]|\\.|'')*'?)
    | (?P<string>'(?:[^']|'')*'?)
    | (?P<qident>"(?:[^"]|"")*"?)
    | (?P<param>\$\d+)
    | (?P<dollar>\$(?:[^\W\d]\w*)?\$)
    | (?P<word>[^\W\d][\w$]*)
    | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def tokenize(sql: str) -> list[Token]:
    """PostgreSQL lexical tokens; concatenating their texts gives `sql` back exactly."""
    tokens, pos = [], 0
    while pos < len(sql):
        match = _TOKEN.match(sql, pos)
        assert match is not None  # `other` matches any character
        kind, end = match.lastgroup or "other", match.end()
        if kind == "block":  # nested /* */ comments
            depth, end = 1, pos + 2
            while depth and end < len(sql):
                if sql.startswith("/*", end):
                    depth, end = depth + 1, end + 2
                elif sql.startswith("*/", end):
                    depth, end = depth - 1, end + 2
                else:
                    end += 1
            kind = "comment"
        elif kind == "dollar":  # $tag$ ... $tag$
            close = sql.find(match.group(), end)
            end = len(sql) if close < 0 else close + len(match.group())
        tokens.append(Token(kind, sql[pos:end]))
        pos = end
    return tokens


def string_value(token: Token) -> str:
    """The value of a single-quoted literal ('..' or E'..')."""
    if token.kind == "estring":
        inner = token.text[2:-1].replace("''", "'")
        escapes = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
        return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(1)), inner)
    return token.text[1:-1].replace("''", "'")


def identifier_value(token: Token) -> str:
    return token.text[1:-1].replace('""', '"') if token.kind == "qident" else token.text.lower()


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def split_statements(tokens: list[Token]) -> list[list[Token]]:
    """Statements, each with its trailing ';' (if any), split at top-level semicolons."""
    statements, current, depth = [], [], 0
    for token in tokens:
        current.append(token)
        if token.is_op("("):
            depth += 1
        elif token.is_op(")"):
            depth = max(0, depth - 1)
        elif token.is_op(";") and depth == 0:
            statements.append(current)
            current = []
    if current:
        statements.append(current)
    return statements


class Rewriter:
    """Edits to one statement's tokens: replace a token's text, or drop it (text "")."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.sig = [i for i, t in enumerate(tokens) if t.significant]
        self.edits: dict[int, str] = {}

    def tok(self, k: int) -> Token | None:
        return self.tokens[self.sig[k]] if 0 <= k < len(self.sig) else None

    def replace(self, k: int, text: str) -> None:
        self.edits[self.sig[k]] = text

    def drop(self, first: int, last: int) -> None:
        """Drop significant tokens first..last and everything between them."""
        for i in range(self.sig[first], self.sig[last] + 1):
            self.edits[i] = ""

    def group_end(self, k: int) -> int:
        """Index of the ')' closing the '(' at k (or the last token)."""
        depth = 0
        for j in range(k, len(self.sig)):
            token = self.tok(j)
            assert token is not None
            if token.is_op("("):
                depth += 1
            elif token.is_op(")"):
                depth -= 1
                if depth == 0:
                    return j
        return len(self.sig) - 1

    def render(self) -> str:
        return "".join(self.edits.get(i, t.text) for i, t in enumerate(self.tokens))


def rewrite_types(rw: Rewriter) -> None:
    """Redshift type names PostgreSQL lacks, where a type is written: after `::`, CAST's AS,
    ALTER ... TYPE, or a column name in CREATE/ALTER; never in literals, quoted names, comments."""
    first = rw.tok(0)
    ddl = first is not None and first.is_word("create", "alter")
    for k in range(len(rw.sig)):
        token = rw.tok(k)
        assert token is not None
        if token.kind != "word" or rw.sig[k] in rw.edits:
            continue
        before, after = rw.tok(k - 1), rw.tok(k + 1)
        if before is None or before.is_op(".") or (after is not None and after.is_op(".")):
            continue  # a statement's first word, or part of a qualified name
        type_position = (
            before.is_op(":")
            or before.is_word("as", "type")
            or (ddl and before.kind in ("word", "qident"))
            or (token.is_word("varying") and before.is_word("character", "char"))
        )
        if not type_position:
            continue
        word = token.text.lower()
        binary_varying = word == "binary" and after is not None and after.is_word("varying")
        if word in ("varbyte", "varbinary") or binary_varying:
            rw.replace(k, "BYTEA")
            end = k + 1 if binary_varying else k
            if binary_varying:
                rw.replace(k + 1, "")
            following = rw.tok(end + 1)
            if following is not None and following.is_op("("):
                rw.drop(end + 1, rw.group_end(end + 1))  # BYTEA takes no length
        elif word == "super":
            rw.replace(k, "TEXT")
        elif word in ("varchar", "nvarchar", "varying"):
            if word == "nvarchar":
                rw.replace(k, "VARCHAR")
            opening, size, closing = rw.tok(k + 1), rw.tok(k + 2), rw.tok(k + 3)
            if (
                opening is not None
                and opening.is_op("(")
                and size is not None
                and size.is_word("max")
                and closing is not None
                and closing.is_op(")")
            ):
                rw.replace(k + 2, "65535")


_TABLE_ATTRIBUTES = (
    "diststyle", "distkey", "sortkey", "compound", "interleaved", "backup", "encode",
)  # fmt: skip


def rewrite_create_table(rw: Rewriter) -> None:
    """CREATE TABLE as Redshift means it: key constraints informational, attributes ignored."""
    k = 0
    first = rw.tok(0)
    if first is None or not first.is_word("create"):
        return
    k = 1
    while (token := rw.tok(k)) is not None and token.is_word(
        "local", "global", "temp", "temporary", "unlogged"
    ):
        k += 1
    if not (token := rw.tok(k)) or not token.is_word("table"):
        return
    k += 1
    if (token := rw.tok(k)) is not None and token.is_word("if"):
        k += 3  # IF NOT EXISTS
    while (token := rw.tok(k)) is not None and (
        token.kind in ("word", "qident") or token.is_op(".")
    ):
        k += 1  # the table name
    if (token := rw.tok(k)) is not None and token.is_op("("):
        end = rw.group_end(k)
        _rewrite_table_elements(rw, k, end)
        k = end + 1
    _drop_table_attributes(rw, k)


def _rewrite_table_elements(rw: Rewriter, opening: int, closing: int) -> None:
    elements, start, depth = [], opening + 1, 0
    for j in range(opening + 1, closing):
        token = rw.tok(j)
        assert token is not None
        if token.is_op("("):
            depth += 1
        elif token.is_op(")"):
            depth -= 1
        elif token.is_op(",") and depth == 0:
            elements.append((start, j - 1, j))
            start = j + 1
    elements.append((start, closing - 1, None))
    kept = 0
    for index, (first, last, comma) in enumerate(elements):
        if first > last:
            continue
        head = rw.tok(first)
        assert head is not None
        kind_at = first + 2 if head.is_word("constraint") else first
        kind = rw.tok(kind_at)
        if kind is not None and kind.is_word("primary", "unique", "foreign"):
            if kind.is_word("primary"):
                columns_at = kind_at + 2
                names = _group_names(rw, columns_at)
                rw.drop(first, last)
                checks = " AND ".join(f"{name} IS NOT NULL" for name in names) or "TRUE"
                rw.replace(first, f"CHECK ({checks})")
                kept += 1
                continue
            rw.drop(first, last)  # UNIQUE (...) / FOREIGN KEY (...) REFERENCES ...
            if comma is not None:
                rw.replace(comma, "")
            elif kept and index > 0:
                previous_comma = elements[index - 1][2]
                if previous_comma is not None:
                    rw.replace(previous_comma, "")
            continue
        if not head.is_word("check", "like", "exclude"):
            _rewrite_column(rw, first, last)
        kept += 1


def _group_names(rw: Rewriter, opening: int) -> list[str]:
    token = rw.tok(opening)
    if token is None or not token.is_op("("):
        return []
    return [
        t.text
        for j in range(opening + 1, rw.group_end(opening))
        if (t := rw.tok(j)) is not None and t.kind in ("word", "qident")
    ]


def _rewrite_column(rw: Rewriter, first: int, last: int) -> None:
    j = first + 1
    while j <= last:
        token = rw.tok(j)
        after = rw.tok(j + 1)
        assert token is not None
        if token.is_word("primary") and after is not None and after.is_word("key"):
            rw.replace(j, "NOT NULL")
            rw.replace(j + 1, "")
            j += 2
        elif token.is_word("unique", "distkey", "sortkey"):
            rw.replace(j, "")
            j += 1
        elif token.is_word("encode") and j < last:
            rw.drop(j, j + 1)
            j += 2
        elif token.is_word("references"):
            end = j + 1
            while end + 1 <= last and (nxt := rw.tok(end + 1)) is not None and nxt.is_op("."):
                end += 2
            if end + 1 <= last and (nxt := rw.tok(end + 1)) is not None and nxt.is_op("("):
                end = rw.group_end(end + 1)
            rw.drop(j, min(end, last))
            j = end + 1
        else:
            j += 1


def _drop_table_attributes(rw: Rewriter, k: int) -> None:
    while (token := rw.tok(k)) is not None and token.is_word(*_TABLE_ATTRIBUTES):
        start = k
        if token.is_word("compound", "interleaved"):
            k += 1
        k += 1  # the attribute keyword
        value = rw.tok(k)
        if value is not None and value.is_op("("):
            k = rw.group_end(k) + 1
        elif value is not None and value.kind == "word":
            k += 1  # DISTSTYLE EVEN, SORTKEY AUTO, BACKUP NO, ENCODE AUTO
        rw.drop(start, k - 1)


# --------------------------------------------------------------------------- COPY from S3


@dataclass
class CopyJob:
    """A parsed `COPY <table> FROM 's3://...' ...` statement."""

    table_sql: str  # the table reference as written
    table_parts: list[str]  # its normalised name parts
    column_sql: list[str]  # the listed columns as written
    column_names: list[str]  # ... normalised
    url: str
    manifest: bool = False
    iam_role: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    credentials: str | None = field(default=None, repr=False)
    parquet: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def table_label(self) -> str:
        return self.table_parts[-1] if self.table_parts else self.table_sql

    def rewritten(self) -> str:
        columns = f" ({', '.join(self.column_sql)})" if self.column_sql else ""
        return f"COPY {self.table_sql}{columns} FROM STDIN WITH (FORMAT csv, ENCODING 'UTF8')"

    def describe(self) -> str:
        """For the log: never the keys."""
        auth = (
            f"IAM_ROLE {self.iam_role}"
            if self.iam_role
            else "ACCESS_KEY_ID ***"
            if self.access_key_id
            else "CREDENTIALS ***"
            if self.credentials
            else "no credentials"
        )
        return f"COPY {self.table_sql} FROM {self.url} {auth}{' MANIFEST' if self.manifest else ''}"


def parse_copy(tokens: list[Token]) -> CopyJob | None:
    """A COPY from an s3:// URL, else None (the statement then goes to PostgreSQL unchanged)."""
    sig = [t for t in tokens if t.significant and not t.is_op(";")]
    if len(sig) < 4 or not sig[0].is_word("copy"):
        return None
    k, parts, part_sql = 1, [], []
    while k < len(sig) and sig[k].kind in ("word", "qident"):
        parts.append(identifier_value(sig[k]))
        part_sql.append(sig[k].text)
        if k + 1 < len(sig) and sig[k + 1].is_op("."):
            k += 2
        else:
            k += 1
            break
    if not parts or parts[0] == "from":
        return None
    column_sql, column_names = [], []
    if k < len(sig) and sig[k].is_op("("):
        k += 1
        while k < len(sig) and not sig[k].is_op(")"):
            if sig[k].kind in ("word", "qident"):
                column_sql.append(sig[k].text)
                column_names.append(identifier_value(sig[k]))
            elif not sig[k].is_op(","):
                return None
            k += 1
        k += 1
    if k + 1 >= len(sig) or not sig[k].is_word("from"):
        return None
    source = sig[k + 1]
    if source.kind not in ("string", "estring"):
        return None
    url = string_value(source)
    if not url.lower().startswith("s3://"):
        return None
    job = CopyJob(".".join(part_sql), parts, column_sql, column_names, url)
    _parse_copy_options(job, sig[k + 2 :])
    return job


def _parse_copy_options(job: CopyJob, sig: list[Token]) -> None:
    def text_after(i: int, allow_as: bool = False) -> tuple[str | None, int]:
        if allow_as and i < len(sig) and sig[i].is_word("as"):
            i += 1
        if i < len(sig) and sig[i].kind in ("string", "estring"):
            return string_value(sig[i]), i + 1
        return None, i

    i = 0
    while i < len(sig):
        token = sig[i]
        word = token.text.lower() if token.kind == "word" else ""
        i += 1
        if word == "iam_role":
            if i < len(sig) and sig[i].is_word("default"):
                job.iam_role, i = "default", i + 1
            else:
                job.iam_role, i = text_after(i)
                if job.iam_role is None:
                    job.problems.append(INVALID_CREDENTIALS)
        elif word in ("access_key_id", "secret_access_key", "session_token"):
            value, i = text_after(i)
            setattr(job, word, value)
        elif word == "credentials":
            job.credentials, i = text_after(i, allow_as=True)
        elif word == "format":
            if i < len(sig) and sig[i].is_word("as"):
                i += 1
            if i < len(sig) and sig[i].is_word("parquet"):
                job.parquet = True
            else:
                shown = sig[i].text if i < len(sig) and sig[i].kind == "word" else "?"
                job.problems.append(f"FORMAT AS {shown.upper()} is not supported (only PARQUET)")
            i += 1
        elif word == "manifest":
            job.manifest = True
        elif word == "region":
            _, i = text_after(i, allow_as=True)
        elif word in ("compupdate", "statupdate"):
            if i < len(sig) and sig[i].is_word("on", "off", "true", "false", "preset"):
                i += 1
        elif word == "maxerror":
            if i < len(sig) and sig[i].is_word("as"):
                i += 1
            if i < len(sig) and sig[i].kind == "number" and sig[i].text == "0":
                i += 1
            else:
                job.problems.append("MAXERROR above 0 is not supported")
                i += 1
        elif token.kind == "word":
            job.problems.append(f"COPY option {token.text.upper()} is not supported")
        else:
            job.problems.append("unexpected text in the COPY options")
    if not job.parquet and not any("FORMAT" in p for p in job.problems):
        job.problems.append("only FORMAT AS PARQUET is supported")


def rewrite_sql(sql: str) -> tuple[str, list[CopyJob]]:
    """The SQL PostgreSQL should run instead of `sql`, and the S3 COPYs in it, in order."""
    out, jobs = [], []
    for statement in split_statements(tokenize(sql)):
        job = parse_copy(statement)
        if job is not None:
            jobs.append(job)
            leading = "".join(t.text for t in statement[: _first_significant(statement)])
            out.append(leading + job.rewritten() + (";" if statement[-1].is_op(";") else ""))
            continue
        rw = Rewriter(statement)
        rewrite_types(rw)
        rewrite_create_table(rw)
        out.append(rw.render())
    return "".join(out), jobs


def _first_significant(tokens: list[Token]) -> int:
    return next((i for i, t in enumerate(tokens) if t.significant), len(tokens))


# =========================================================================== errors


class CopyError(Exception):
    """A COPY that fails as a whole (credentials, manifest, options): sent as this error."""

    def __init__(self, message: str, *, detail: str = "", sqlstate: str = "XX000") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.sqlstate = sqlstate

    def fields(self) -> dict[str, str]:
        fields = {"S": "ERROR", "V": "ERROR", "C": self.sqlstate, "M": self.message}
        if self.detail:
            fields["D"] = self.detail
        return fields


def unsupported(what: str) -> CopyError:
    return CopyError(f"Redshift stand-in: {what}", sqlstate="0A000")


@dataclass
class Column:
    name: str
    typname: str
    length: int | None  # VARCHAR(n) / CHAR(n)
    not_null: bool

    @property
    def redshift_type(self) -> str:
        return "varbyte" if self.typname == "bytea" else self.typname


@dataclass
class RowError(Exception):
    """A value Redshift would refuse: one row for sys_load_error_detail and stl_load_errors."""

    code: int
    reason: str
    file_url: str = ""
    line: int = 0
    column: Column | None = None
    column_name: str = ""
    position: int = 0
    raw_value: str = ""
    raw_line: str = ""


# Redshift load error codes by PostgreSQL SQLSTATE (and by column type where that decides).
def redshift_error_code(sqlstate: str, typname: str) -> int:
    if sqlstate in ("23502", "23514"):
        return 1213
    if sqlstate == "22001":
        return 1204
    if sqlstate in ("22021", "22P05"):
        return 1220
    if sqlstate == "22P04":
        return 1202
    by_type = {
        "int2": 1207, "int4": 1207, "int8": 1207, "float4": 1208, "float8": 1208,
        "numeric": 1209, "bool": 1210, "date": 1205, "timestamp": 1206, "timestamptz": 1206,
        "time": 1206, "timetz": 1206,
    }  # fmt: skip
    code = by_type.get(typname, 1216)
    if sqlstate == "22003" and typname in ("int2", "int4", "int8"):
        return 1222
    return code


# =========================================================================== S3 and Parquet


@dataclass(frozen=True)
class S3File:
    url: str
    bucket: str
    key: str
    size: int


def split_s3_url(url: str) -> tuple[str, str]:
    match = re.fullmatch(r"(?i:s3)://([^/]+)/?(.*)", url, re.DOTALL)
    if not match:
        raise CopyError(f"Invalid S3 URL: {url}", detail="code: 8001")
    return match.group(1), match.group(2)


def s3_failure(exc: ClientError, context: str) -> CopyError:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
    return CopyError(
        f"S3ServiceException:{error.get('Message', 'error')},Status {status},"
        f"Error {error.get('Code', '?')}",
        detail=f"  error:  S3 request failed\n  code:      8001\n  context:   {context}",
    )


class S3Files:
    """Resolves a COPY's source to files and reads them, with the stack's credentials."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint,
            aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=settings.s3_secret_key,
            region_name=settings.region,
            config=BotoConfig(
                retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"}
            ),
        )

    def authorize(self, job: CopyJob, user: str) -> None:
        """Raise like Redshift unless the COPY's credentials are the ones the stack allows."""
        role, key_id, secret = job.iam_role, job.access_key_id, job.secret_access_key
        if job.credentials is not None:
            pairs = dict(part.split("=", 1) for part in job.credentials.split(";") if "=" in part)
            role = pairs.get("aws_iam_role", role)
            key_id = pairs.get("aws_access_key_id", key_id)
            secret = pairs.get("aws_secret_access_key", secret)
        if role is not None and key_id is None and secret is None:
            if role == "default":
                role = self.settings.iam_role
            if role != self.settings.iam_role:
                principal = (
                    f"arn:aws:redshift:{self.settings.region}:{self.settings.account_id}"
                    f":dbuser:s3rs-local/{user}"
                )
                raise CopyError(
                    f"User {principal} is not authorized to assume IAM Role {role}",
                    detail=(
                        f"  error:  User {principal} is not authorized to assume IAM Role "
                        f"{role}\n  code:      8001\n  context:   IAM Role={role}"
                    ),
                )
            return
        if role is not None or key_id is None or secret is None:
            raise CopyError(INVALID_CREDENTIALS)
        if not hmac.compare_digest(key_id.encode(), self.settings.s3_access_key.encode()):
            raise CopyError(
                "S3ServiceException:The AWS Access Key Id you provided does not exist in our "
                "records.,Status 403,Error InvalidAccessKeyId",
                detail="  code:      8001",
            )
        if not hmac.compare_digest(secret.encode(), self.settings.s3_secret_key.encode()):
            raise CopyError(
                "S3ServiceException:The request signature we calculated does not match the "
                "signature you provided. Check your key and signing method.,Status 403,"
                "Error SignatureDoesNotMatch",
                detail="  code:      8001",
            )

    def resolve(self, job: CopyJob) -> list[S3File]:
        bucket, key = split_s3_url(job.url)
        return self._manifest(job.url, bucket, key) if job.manifest else self._prefix(bucket, key)

    def _prefix(self, bucket: str, prefix: str) -> list[S3File]:
        files = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            ):
                for item in page.get("Contents", []):
                    if item["Key"].endswith("/") and item["Size"] == 0:
                        continue  # a "folder" marker
                    url = f"s3://{bucket}/{item['Key']}"
                    files.append(S3File(url, bucket, item["Key"], item["Size"]))
        except ClientError as exc:
            raise s3_failure(exc, f"Listing bucket={bucket} prefix={prefix}") from exc
        if not files:
            raise CopyError(
                f"The specified S3 prefix '{prefix}' does not exist",
                detail=f"  error:  The specified S3 prefix '{prefix}' does not exist\n"
                f"  code:      8001\n  context:   s3://{bucket}/{prefix}",
            )
        return files

    def _manifest(self, url: str, bucket: str, key: str) -> list[S3File]:
        try:
            raw = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            failure = s3_failure(exc, f"manifest {url}")
            failure.message = f"Problem reading manifest file - {failure.message}"
            raise failure from exc
        try:
            entries = json.loads(raw)["entries"]
            if not isinstance(entries, list):
                raise TypeError("entries is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            raise CopyError(
                "Manifest file is not in correct json format",
                detail=f"  context:   {url}: {exc}",
            ) from exc
        files = []
        for number, entry in enumerate(entries, 1):
            if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
                raise CopyError(
                    "Manifest file is not in correct json format",
                    detail=f"  context:   {url}: entry {number} has no url",
                )
            entry_url = entry["url"]
            length = (entry.get("meta") or {}).get("content_length")
            if not isinstance(length, int):
                raise CopyError(
                    f"Manifest entry '{entry_url}' has no meta.content_length, which COPY "
                    f"FORMAT AS PARQUET requires",
                    detail=f"  code:      8001\n  context:   {url}",
                )
            entry_bucket, entry_key = split_s3_url(entry_url)
            try:
                size = self.client.head_object(Bucket=entry_bucket, Key=entry_key)["ContentLength"]
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status != 404:
                    raise s3_failure(exc, entry_url) from exc
                if entry.get("mandatory") is True:
                    raise CopyError(
                        f"Manifest file '{url}' lists the mandatory file '{entry_url}', which "
                        f"does not exist (S3ServiceException:The specified key does not exist."
                        f",Status 404,Error NoSuchKey)",
                        detail=f"  code:      8001\n  context:   {entry_url}",
                    ) from exc
                continue  # an optional entry that is not there
            if size != length:
                raise CopyError(
                    f"File '{entry_url}' has {size} bytes but its manifest content_length is "
                    f"{length}",
                    detail=f"  code:      8001\n  context:   {url}",
                )
            files.append(S3File(entry_url, entry_bucket, entry_key, size))
        if not files:
            raise CopyError(f"Manifest file '{url}' lists no file that exists")
        return files

    def read(self, file: S3File) -> pq.ParquetFile:
        try:
            data = self.client.get_object(Bucket=file.bucket, Key=file.key)["Body"].read()
        except ClientError as exc:
            raise s3_failure(exc, file.url) from exc
        try:
            return pq.ParquetFile(io.BytesIO(data))
        except (pa.ArrowException, OSError) as exc:
            raise CopyError(
                f"File '{file.url}' is not a valid Parquet file: {exc}", detail="  code:      8001"
            ) from exc


def python_text(value: Any) -> str:
    """A value as text for the load-error tables."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def raw_line_text(batch: pa.RecordBatch, row: int) -> str:
    """Redshift's raw_line: the row's fields, multibyte characters replaced with '.'."""
    text = ",".join(python_text(batch.column(i)[row].as_py()) for i in range(batch.num_columns))
    return re.sub(r"[^\x01-\x7f]", ".", text)[:1024]


def _first_true(mask: pa.Array) -> int:
    return pc.index(mask, True).as_py()


def _first_invalid_utf8(array: pa.Array) -> int:
    try:
        array.cast(pa.large_string())
        return -1
    except pa.ArrowInvalid:
        for row, value in enumerate(array.to_pylist()):
            if value is not None:
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    return row
        return -1


def validate_batch(
    batch: pa.RecordBatch, columns: Sequence[Column | None], file_url: str, line_base: int
) -> None:
    """Raise the first value (by row, then column) that Redshift would refuse."""
    found: list[tuple[int, int, int, str, int]] = []  # row, column, code, reason, position
    for i, array in enumerate(batch.columns):
        column = columns[i] if i < len(columns) else None
        kind = array.type
        if pa.types.is_dictionary(kind):
            array = array.dictionary_decode()
            kind = array.type
        textual = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        binary = pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
        to_bytea = column is not None and column.typname == "bytea"
        if binary and not to_bytea and (row := _first_invalid_utf8(array)) >= 0:
            found.append((row, i, 1220, "String contains invalid or unsupported UTF8", 0))
        if textual or (binary and not to_bytea):
            nul = pc.match_substring(array.cast(pa.large_binary()), b"\0")
            if (row := _first_true(nul)) >= 0:
                value = array[row].as_py()
                position = 1 + (value.find("\0") if textual else bytes(value).find(b"\0"))
                found.append(
                    (row, i, 1220, "Invalid null byte - NUL (0x00) is not allowed", position)
                )
        if (
            column is not None
            and column.length is not None
            and column.typname in ("varchar", "bpchar")
            and (textual or binary)
        ):
            too_long = pc.greater(pc.binary_length(array), column.length)
            if (row := _first_true(too_long)) >= 0:
                found.append((row, i, 1204, "String length exceeds DDL length", 0))
    if not found:
        return
    row, i, code, reason, position = min(found)
    value = batch.column(i)[row].as_py()
    raise RowError(
        code,
        reason,
        file_url=file_url,
        line=line_base + row + 1,
        column=columns[i] if i < len(columns) else None,
        column_name=columns[i].name if i < len(columns) and columns[i] else "",
        position=position,
        raw_value=python_text(value),
        raw_line=raw_line_text(batch, row),
    )


def _text_array(array: pa.Array, column: Column | None) -> pa.Array:
    """One column as PostgreSQL input text (None stays null)."""
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.dictionary_decode()
        kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return array
    if (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
    ):
        if column is not None and column.typname != "bytea":
            return array.cast(pa.large_binary()).cast(pa.large_string())
        return pa.array(
            [None if v is None else "\\x" + v.hex() for v in array.to_pylist()], pa.large_string()
        )
    if pa.types.is_timestamp(kind):
        utc = array.cast(pa.timestamp(kind.unit))  # naive: the UTC wall clock of the instant
        return pc.binary_join_element_wise(utc.cast(pa.string()), "+00", "")
    if pa.types.is_null(kind):
        return pa.nulls(len(array), pa.string())
    if pa.types.is_nested(kind):
        return pa.array([None if v is None else python_text(v) for v in array.to_pylist()])
    try:
        return array.cast(pa.string())
    except pa.ArrowException:
        return pa.array([None if v is None else python_text(v) for v in array.to_pylist()])


def render_batch(batch: pa.RecordBatch, columns: Sequence[Column | None]) -> bytes:
    """CSV for COPY ... (FORMAT csv): NULL is an empty field, '' a quoted empty string."""
    arrays = [
        _text_array(batch.column(i), columns[i] if i < len(columns) else None)
        for i in range(batch.num_columns)
    ]
    table = pa.Table.from_arrays(arrays, names=[f"c{i}" for i in range(len(arrays))])
    out = io.BytesIO()
    pa_csv.write_csv(table, out, pa_csv.WriteOptions(include_header=False, quoting_style="needed"))
    return out.getvalue()


# =========================================================================== own connections


DIAGNOSTICS_DDL = """
CREATE TABLE IF NOT EXISTS public.sys_load_error_detail (
    user_id integer, query_id bigint, transaction_id bigint, session_id integer,
    database_name character(64), table_id integer, start_time timestamp without time zone,
    file_name character(256), line_number bigint, column_name character(127),
    column_type character(10), column_length character(10), position integer,
    error_code integer, error_message character(512));
CREATE TABLE IF NOT EXISTS public.stl_load_errors (
    userid integer, slice integer, tbl integer, starttime timestamp without time zone,
    session integer, query integer, filename character(256), line_number bigint,
    colname character(127), type character(10), col_length character(10), position integer,
    raw_line character(1024), raw_field_value character(1024), err_code integer,
    err_reason character(100));
CREATE TABLE IF NOT EXISTS public.s3rs_standin_copy_state (
    session_id integer PRIMARY KEY, copy_id bigint NOT NULL, copy_count bigint NOT NULL);
CREATE OR REPLACE FUNCTION public.pg_last_copy_count() RETURNS bigint LANGUAGE sql STABLE AS
    $$ SELECT coalesce((SELECT copy_count FROM public.s3rs_standin_copy_state
                        WHERE session_id = pg_catalog.pg_backend_pid()), 0) $$;
CREATE OR REPLACE FUNCTION public.pg_last_copy_id() RETURNS bigint LANGUAGE sql STABLE AS
    $$ SELECT coalesce((SELECT copy_id FROM public.s3rs_standin_copy_state
                        WHERE session_id = pg_catalog.pg_backend_pid()), -1) $$;
GRANT SELECT ON public.sys_load_error_detail, public.stl_load_errors,
    public.s3rs_standin_copy_state TO PUBLIC;
"""

COLUMNS_SQL = """
SELECT a.attname, t.typname, a.atttypmod, a.attnotnull, c.oid,
       (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE c.oid = {relation}
ORDER BY a.attnum
"""


@dataclass
class TableInfo:
    oid: int
    user_oid: int
    columns: list[Column]

    def select(self, names: list[str]) -> list[Column] | None:
        """The COPY's target columns: all, or the listed ones in their order."""
        if not names:
            return self.columns
        by_name = {c.name: c for c in self.columns}
        picked = [by_name.get(name) for name in names]
        return None if None in picked else [c for c in picked if c]


def table_info(rows: Sequence[Sequence[Any]]) -> TableInfo | None:
    if not rows:
        return None
    columns = []
    for name, typname, typmod, not_null, _, _ in rows:
        typmod = int(typmod)
        length = typmod - 4 if typname in ("varchar", "bpchar") and typmod > 4 else None
        columns.append(Column(name, typname, length, str(not_null) in ("t", "True")))
    return TableInfo(int(rows[0][4]), int(rows[0][5] or 0), columns)


class Diagnostics:
    """The stand-in's own autocommitted connections: system tables, lookups, pg_settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connections: dict[str, tuple[threading.Lock, psycopg.Connection | None]] = {}
        self._lock = threading.Lock()
        self._ready: set[str] = set()
        self.setting_names: set[str] | None = None

    def _run(self, database: str, work: Callable[[psycopg.Connection], Any]) -> Any:
        with self._lock:
            lock, _ = self._connections.setdefault(database, (threading.Lock(), None))
        with lock:
            for attempt in (1, 2):
                connection = self._connections[database][1]
                try:
                    if connection is None or connection.closed:
                        connection = psycopg.connect(
                            host=self.settings.postgres_host,
                            port=self.settings.postgres_port,
                            user=self.settings.postgres_user,
                            password=self.settings.postgres_password,
                            dbname=database,
                            autocommit=True,
                            connect_timeout=10,
                            application_name="redshift-standin",
                        )
                        self._connections[database] = (lock, connection)
                    return work(connection)
                except psycopg.OperationalError:
                    self._connections[database] = (lock, None)
                    if attempt == 2:
                        raise
        return None

    def ensure(self, database: str) -> None:
        """Create the Redshift system tables and functions in `database` (once)."""
        if database in self._ready:
            return

        def create(connection: psycopg.Connection) -> None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_catalog.pg_advisory_lock(4242001)")
                try:
                    cursor.execute(DIAGNOSTICS_DDL)
                finally:
                    cursor.execute("SELECT pg_catalog.pg_advisory_unlock(4242001)")
            if self.setting_names is None:
                rows = connection.execute("SELECT lower(name) FROM pg_catalog.pg_settings")
                self.setting_names = {row[0] for row in rows}

        self._run(database, create)
        self._ready.add(database)

    def table_of_copy(self, database: str, pid: int, user: str) -> TableInfo | None:
        """The table a running COPY loads, when its definition is committed."""

        def lookup(connection: psycopg.Connection) -> TableInfo | None:
            row = connection.execute(
                "SELECT relid FROM pg_catalog.pg_stat_progress_copy WHERE pid = %s", (pid,)
            ).fetchone()
            if row is None or row[0] is None:
                return None
            sql = COLUMNS_SQL.format(relation="%s").replace("current_user", "%s")
            return table_info(connection.execute(sql, (user, row[0])).fetchall())

        return self._run(database, lookup)

    def copy_started(self, database: str, pid: int, query_id: int) -> None:
        self.ensure(database)
        self._run(
            database,
            lambda c: c.execute(
                "INSERT INTO public.s3rs_standin_copy_state VALUES (%s, %s, 0) "
                "ON CONFLICT (session_id) DO UPDATE SET copy_id = excluded.copy_id, copy_count = 0",
                (pid, query_id),
            ),
        )

    def copy_finished(self, database: str, pid: int, rows: int) -> None:
        self._run(
            database,
            lambda c: c.execute(
                "UPDATE public.s3rs_standin_copy_state SET copy_count = %s WHERE session_id = %s",
                (rows, pid),
            ),
        )

    def session_closed(self, database: str, pid: int) -> None:
        self._run(
            database,
            lambda c: c.execute(
                "DELETE FROM public.s3rs_standin_copy_state WHERE session_id = %s", (pid,)
            ),
        )

    def record(self, database: str, load: LoadRecord, error: RowError) -> None:
        """One row in sys_load_error_detail and one in stl_load_errors."""
        column = error.column
        column_name = (column.name if column else error.column_name)[:127]
        column_type = (column.redshift_type if column else "")[:10]
        column_length = str(column.length) if column and column.length is not None else ""
        raw_value = error.raw_value[:1024].replace("\0", "\\0")
        raw_line = error.raw_line.replace("\0", ".")[:1024]
        file_name = error.file_url[:256]

        def insert(connection: psycopg.Connection) -> None:
            with connection.transaction():
                connection.execute(
                    "INSERT INTO public.sys_load_error_detail VALUES "
                    "(%s, %s, 0, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        load.user_oid, load.query_id, load.pid, database[:64], load.table_oid,
                        load.start_time, file_name, error.line, column_name, column_type,
                        column_length, error.position, error.code, error.reason[:512],
                    ),
                )  # fmt: skip
                connection.execute(
                    "INSERT INTO public.stl_load_errors VALUES "
                    "(%s, 0, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        load.user_oid, load.table_oid, load.start_time, load.pid, load.query_id,
                        file_name, error.line, column_name, column_type, column_length,
                        error.position, raw_line, raw_value, error.code, error.reason[:100],
                    ),
                )  # fmt: skip

        self.ensure(database)
        self._run(database, insert)

    def close(self) -> None:
        with self._lock:
            for _, connection in self._connections.values():
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection.close()


# =========================================================================== one session


@dataclass
class Execution:
    """One run of an S3 COPY: the job and what the probe learned about its table."""

    job: CopyJob
    table: TableInfo | None = None


@dataclass
class Prepared:
    """What the stand-in tracks of a prepared statement or a portal."""

    execution: Execution | None = None  # set when it is an S3 COPY
    bytea: tuple[int, ...] = ()  # its bytea result columns sent as text (printed as VARBYTE)


def bytea_columns(row_description: bytes, *, check_format: bool) -> tuple[int, ...]:
    """Indexes of the bytea columns in a RowDescription (text format only, when known)."""
    (count,) = struct.unpack_from("!h", row_description)
    offset, found = 2, []
    for index in range(count):
        offset = row_description.index(b"\0", offset) + 1
        type_oid, _, _, fmt = struct.unpack_from("!Ihih", row_description, offset + 6)
        if type_oid == 17 and (fmt == 0 or not check_format):
            found.append(index)
        offset += 18
    return tuple(found)


def result_formats(bind: bytes) -> list[int]:
    """The result-column format codes at the end of a Bind message."""
    offset = cstring(bind, cstring(bind)[1])[1]
    (count,) = struct.unpack_from("!h", bind, offset)
    offset += 2 + 2 * count
    (params,) = struct.unpack_from("!h", bind, offset)
    offset += 2
    for _ in range(params):
        (size,) = struct.unpack_from("!i", bind, offset)
        offset += 4 + max(size, 0)
    (count,) = struct.unpack_from("!h", bind, offset)
    return list(struct.unpack_from(f"!{count}h", bind, offset + 2))


def strip_bytea_prefix(data_row: bytes, columns: tuple[int, ...]) -> bytes:
    """PostgreSQL prints bytea as \\x0102, Redshift prints VARBYTE as 0102."""
    (count,) = struct.unpack_from("!h", data_row)
    parts, offset = [data_row[:2]], 2
    for index in range(count):
        (size,) = struct.unpack_from("!i", data_row, offset)
        value = data_row[offset + 4 : offset + 4 + max(size, 0)]
        offset += 4 + max(size, 0)
        if index in columns and value.startswith(b"\\x"):
            value, size = value[2:], size - 2
        parts.append(struct.pack("!i", size) + value)
    return b"".join(parts)


@dataclass
class LoadRecord:
    """Facts about a running COPY that the load-error rows repeat."""

    query_id: int
    pid: int
    start_time: dt.datetime
    table_oid: int = 0
    user_oid: int = 0


@dataclass
class Span:
    """The rows of one file within the COPY's data stream (global lines first..first+rows-1)."""

    file: S3File
    first: int
    rows: int


class Session:
    """One client connection and the PostgreSQL session behind it."""

    PROBE = b"s3rs_standin_probe\0"

    def __init__(self, standin: StandIn, sock: socket.socket, peer: str) -> None:
        self.standin = standin
        self.settings = standin.settings
        self.client = Wire(sock, "client")
        self.server: Wire | None = None
        self.peer = peer
        self.user = ""
        self.database = ""
        self.pid = 0
        self.statements: dict[str, Prepared] = {}
        self.portals: dict[str, Prepared] = {}
        self.pending: list[Execution] = []  # S3 COPYs sent, waiting for their CopyInResponse
        self.describes: list[tuple[bytes, str]] = []  # Describe targets awaiting their answer
        self.executes: list[tuple[int, ...]] = []  # bytea columns of each Execute in flight
        self.simple_bytea: tuple[int, ...] = ()  # ... of the current simple-Query result
        self.outstanding = 0  # Sync and Query messages not yet answered by ReadyForQuery
        self.batch_open = False  # extended-protocol messages sent since the last Sync
        self.copied = False
        self.redshift_driver = False  # redshift-connector: VARBYTE results are printed as hex

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> None:
        try:
            if self._startup():
                self._loop()
        except (ConnectionClosed, ProtocolError, OSError) as exc:
            log.debug("session %s ended: %s", self.pid or self.peer, exc)
        except Exception:
            log.exception("session %s failed", self.pid or self.peer)
        finally:
            if self.copied and self.database:
                with contextlib.suppress(Exception):
                    self.standin.diagnostics.session_closed(self.database, self.pid)
            self.client.close()
            if self.server is not None:
                self.server.close()
            if self.pid:
                log.info("session %s closed", self.pid)

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.close()

    def _startup(self) -> bool:
        self.client.sock.settimeout(30)
        while True:
            length = struct.unpack("!I", self.client.read_exact(4))[0]
            if not 8 <= length <= 10000:
                raise ProtocolError("bad startup packet")
            body = self.client.read_exact(length - 4)
            (code,) = struct.unpack_from("!I", body)
            if code == SSL_REQUEST:
                context = self.standin.tls_context
                self.client.send(b"S" if context else b"N")
                if context:
                    self.client.sock = context.wrap_socket(self.client.sock, server_side=True)
                continue
            if code == GSSENC_REQUEST:
                self.client.send(b"N")
                continue
            if code == CANCEL_REQUEST:
                with socket.create_connection(self._postgres_address(), timeout=10) as sock:
                    sock.sendall(struct.pack("!I", length) + body)
                return False
            if code != PROTOCOL_V3:
                raise ProtocolError(f"unsupported protocol {code}")
            break
        self.client.sock.settimeout(None)
        items = body[4:].split(b"\0")
        params = {
            items[i].decode("utf-8", "replace"): items[i + 1]
            for i in range(0, len(items) - 1, 2)
            if items[i]
        }
        self.redshift_driver = "client_protocol_version" in params
        self.user = params.get("user", b"").decode("utf-8", "replace")
        self.database = params.get("database", params.get("user", b"")).decode("utf-8", "replace")
        known = self.standin.diagnostics.setting_names or FALLBACK_SETTINGS
        kept = {
            name: value
            for name, value in params.items()
            if name in STARTUP_KEYWORDS or name.startswith("_pq_.") or name.lower() in known
        }
        dropped = sorted(set(params) - set(kept))
        startup = struct.pack("!I", PROTOCOL_V3) + b"".join(
            name.encode() + b"\0" + value + b"\0" for name, value in kept.items()
        )
        self.server = Wire(socket.create_connection(self._postgres_address(), timeout=10), "pg")
        self.server.sock.settimeout(None)
        self.server.send(struct.pack("!I", len(startup) + 5) + startup + b"\0")
        while True:
            kind, body = self.server.read_message()
            if kind == b"R":
                self.client.send(message(kind, body))
                (auth,) = struct.unpack_from("!I", body)
                if auth in (2, 3, 5, 7, 9, 10, 11):  # the client must answer
                    self.server.send(message(*self.client.read_message()))
            elif kind == b"K":
                self.pid = struct.unpack_from("!I", body)[0]
                self.client.send(message(kind, body))
            elif kind == b"Z":
                self.client.send(message(kind, body))
                application = params.get("application_name", b"").decode("utf-8", "replace")
                log.info(
                    "session %s: user=%s database=%s application=%s from %s%s",
                    self.pid, self.user, self.database, application, self.peer,
                    f" (dropped startup parameters: {', '.join(dropped)})" if dropped else "",
                )  # fmt: skip
                return True
            elif kind == b"E":
                self.client.send(message(kind, body))
                return False
            else:
                self._to_client(kind, body)

    def _postgres_address(self) -> tuple[str, int]:
        return self.settings.postgres_host, self.settings.postgres_port

    # ------------------------------------------------------------------ relaying

    def _loop(self) -> None:
        assert self.server is not None
        while not self.standin.stopping.is_set():
            while (found := self.server.next_message()) is not None:
                self._on_server(*found)
            while not self.pending and (found := self.client.next_message()) is not None:
                self._on_client(*found)
            if self.server.has_message() or (not self.pending and self.client.has_message()):
                continue
            watch = [self.server.sock] if self.pending else [self.server.sock, self.client.sock]
            if not self.pending and self.client.pending():
                self.client.fill()
                continue
            ready, _, _ = select.select(watch, [], [], 1.0)
            for sock in ready:
                (self.server if sock is self.server.sock else self.client).fill()

    def _to_client(self, kind: bytes, body: bytes) -> None:
        """Relay one server message, keeping track of the results and rewriting what differs."""
        if kind == b"D":
            columns = self.executes[0] if self.executes else self.simple_bytea
            if columns and self.redshift_driver:
                body = strip_bytea_prefix(body, columns)
        elif kind == b"T":
            if self.describes:
                target, name = self.describes.pop(0)
                prepared = (self.statements if target == b"S" else self.portals).get(name)
                if prepared is not None:
                    prepared.bytea = bytea_columns(body, check_format=target == b"P")
            else:
                self.simple_bytea = bytea_columns(body, check_format=True)
        elif kind == b"n" and self.describes:
            self.describes.pop(0)
        elif kind in (b"C", b"s", b"I"):
            if self.executes:
                self.executes.pop(0)
            else:
                self.simple_bytea = ()
        elif kind in (b"E", b"Z"):
            self.describes.clear()
            self.executes.clear()
            self.simple_bytea = ()
        elif kind == b"S":
            name = cstring(body)[0]
            if name == "server_version":
                body = b"server_version\0" + self.settings.server_version.encode() + b"\0"
        self.client.send(message(kind, body))

    def _on_server(self, kind: bytes, body: bytes) -> None:
        if kind == b"Z":
            self.outstanding = max(0, self.outstanding - 1)
            self.pending.clear()
        elif kind == b"E":
            self.pending.clear()  # the rest of the Query, or of the batch, will not run
        elif kind == b"G" and self.pending:
            self._run_copy(self.pending.pop(0), body)
            return
        self._to_client(kind, body)

    def _on_client(self, kind: bytes, body: bytes) -> None:
        assert self.server is not None
        if kind == b"Q":
            sql = body[:-1].decode("utf-8", "replace")
            rewritten, jobs = rewrite_sql(sql)
            executions = [Execution(job) for job in jobs]
            if executions and self._can_probe():
                executions[0].table = self._probe(executions[0].job)
            self.statements.pop("", None)
            self.portals.pop("", None)
            self.server.send(message(b"Q", rewritten.encode() + b"\0"))
            self.outstanding += 1
            self.pending.extend(executions)
        elif kind == b"P":
            name, offset = cstring(body)
            sql, rest = cstring(body, offset)
            rewritten, jobs = rewrite_sql(sql)
            execution = Execution(jobs[0]) if len(jobs) == 1 else None
            if execution is not None and self._can_probe():
                execution.table = self._probe(execution.job)
            self.statements[name] = Prepared(execution)
            self.server.send(
                message(b"P", name.encode() + b"\0" + rewritten.encode() + b"\0" + body[rest:])
            )
            self.batch_open = True
        elif kind == b"B":
            portal, offset = cstring(body)
            statement = self.statements.get(cstring(body, offset)[0], Prepared())
            execution = statement.execution
            if execution is not None:
                execution = Execution(execution.job, execution.table)
                if self._can_probe():
                    execution.table = self._probe(execution.job)
            formats = result_formats(body)
            text = tuple(
                i
                for i in statement.bytea
                if (formats[i] if len(formats) > 1 and i < len(formats) else (formats or [0])[0])
                == 0
            )
            self.portals[portal] = Prepared(execution, text)
            self.server.send(message(kind, body))
            self.batch_open = True
        elif kind == b"D":
            self.describes.append((body[:1], cstring(body, 1)[0]))
            self.server.send(message(kind, body))
            self.batch_open = True
        elif kind == b"E":
            portal = self.portals.get(cstring(body)[0], Prepared())
            self.executes.append(portal.bytea)
            self.server.send(message(kind, body))
            self.batch_open = True
            if portal.execution is not None:
                self.pending.append(dataclasses.replace(portal.execution))
        elif kind == b"S":
            self.server.send(message(kind, body))
            self.outstanding += 1
            self.batch_open = False
        elif kind == b"C":
            target, name = body[:1], cstring(body, 1)[0]
            (self.statements if target == b"S" else self.portals).pop(name, None)
            self.server.send(message(kind, body))
            self.batch_open = True
        elif kind == b"X":
            self.server.send(message(kind, body))
            raise ConnectionClosed("client terminated")
        else:
            self.server.send(message(kind, body))
            if kind == b"H":
                self.batch_open = True

    def _can_probe(self) -> bool:
        return self.outstanding == 0 and not self.batch_open and not self.pending

    def _probe(self, job: CopyJob) -> TableInfo | None:
        """The target table's columns, read in the client's own session (so its temp tables
        and uncommitted DDL are seen) between two of its requests, without touching its state."""
        assert self.server is not None
        if not 1 <= len(job.table_parts) <= 2:
            return None
        relation = ".".join(quote_identifier(p) for p in job.table_parts).encode()
        sql = COLUMNS_SQL.format(relation="pg_catalog.to_regclass($1)").encode()
        name = self.PROBE
        self.server.send(
            message(b"C", b"S" + name)
            + message(b"C", b"P" + name)
            + message(b"P", name + sql + b"\0" + struct.pack("!hI", 1, 25))
            + message(
                b"B",
                name + name + struct.pack("!hhi", 0, 1, len(relation)) + relation + b"\0\0",
            )
            + message(b"E", name + struct.pack("!i", 0))
            + message(b"C", b"P" + name)
            + message(b"C", b"S" + name)
            + message(b"S")
        )
        rows: list[list[str | None]] = []
        failed = False
        while True:
            kind, body = self.server.read_message()
            if kind == b"D":
                rows.append(data_row_values(body))
            elif kind == b"E":
                failed = True
            elif kind == b"Z":
                break
            elif kind in (b"S", b"A"):
                self._to_client(kind, body)
        return None if failed else table_info(rows)

    # ------------------------------------------------------------------ COPY from S3

    def _run_copy(self, execution: Execution, copy_in: bytes) -> None:
        """PostgreSQL waits for COPY data: stream the S3 files, then relay how it ended."""
        assert self.server is not None
        job = execution.job
        diagnostics = self.standin.diagnostics
        (columns_expected,) = struct.unpack_from("!h", copy_in, 1)
        load = LoadRecord(next(QUERY_IDS), self.pid, dt.datetime.now(dt.UTC).replace(tzinfo=None))
        self.copied = True
        failure: CopyError | None = None
        row_error: RowError | None = None
        postgres_error: dict[str, str] | None = None
        spans: list[Span] = []
        columns: list[Column | None] = [None] * columns_expected
        try:
            if job.problems:
                raise unsupported("; ".join(job.problems))
            self.standin.s3.authorize(job, self.user)
            files = self.standin.s3.resolve(job)
            # The load begins: pg_last_copy_id() moves on, pg_last_copy_count() is 0 until done.
            diagnostics.copy_started(self.database, self.pid, load.query_id)
            table = execution.table or diagnostics.table_of_copy(self.database, self.pid, self.user)
            if table is not None:
                load.table_oid, load.user_oid = table.oid, table.user_oid
                picked = table.select(job.column_names)
                if picked is not None and len(picked) == columns_expected:
                    columns = list(picked)
            postgres_error = self._stream(files, columns, spans)
        except CopyError as exc:
            failure = exc
        except RowError as exc:
            row_error = exc
        except Exception as exc:
            log.exception("session %s: COPY failed inside the stand-in", self.pid)
            failure = CopyError(f"Redshift stand-in internal error: {type(exc).__name__}: {exc}")
        if failure is not None or row_error is not None:
            self.server.send(message(b"f", b"COPY rejected by the Redshift stand-in\0"))
        elif postgres_error is None:
            # CopyDone, then Flush: in the extended protocol PostgreSQL holds its CommandComplete
            # until a Flush or Sync, and the client's Sync waits here until the COPY is over.
            self.server.send(message(b"c") + message(b"H"))
        while postgres_error is None:
            kind, body = self.server.read_message()
            if kind == b"E":
                postgres_error = error_fields(body)
            elif kind == b"C":
                rows = int(body[:-1].split(b" ")[-1] or 0)
                self._diagnose(diagnostics.copy_finished, self.database, self.pid, rows)
                log.info("session %s: %s -> %d rows", self.pid, job.describe(), rows)
                self._to_client(kind, body)
                return
            else:
                self._to_client(kind, body)
        if failure is None and row_error is None:
            row_error = self._locate(postgres_error, spans, columns)
            if row_error is None:  # not about a row: PostgreSQL's own error as it is
                log.info("session %s: %s failed in PostgreSQL", self.pid, job.describe())
                self._fail(postgres_error)
                return
        if row_error is not None:
            self._diagnose(diagnostics.record, self.database, load, row_error)
            failure = CopyError(
                LOAD_FAILED.format(table=job.table_label),
                detail=(
                    "  -----------------------------------------------\n"
                    f"  error:  {row_error.reason}\n"
                    f"  code:      {row_error.code}\n"
                    f"  context:   {row_error.file_url}, line {row_error.line}, column "
                    f"{row_error.column_name}\n"
                    f"  query:     {load.query_id}\n"
                    "  -----------------------------------------------"
                ),
            )
        assert failure is not None
        log.info("session %s: %s failed: %s", self.pid, job.describe(), failure.message)
        self._fail(failure.fields())

    def _diagnose(self, write: Callable[..., None], *args: Any) -> None:
        """Write to the system tables; a failure there is logged, the client still gets its
        answer."""
        try:
            write(*args)
        except psycopg.Error:
            log.exception("session %s: could not write the system tables", self.pid)

    def _fail(self, fields: dict[str, str]) -> None:
        """End the COPY with this error; the rest of the Query or batch does not run."""
        self.pending.clear()
        self._to_client(b"E", error_body(fields))

    def _stream(
        self, files: list[S3File], columns: list[Column | None], spans: list[Span]
    ) -> dict[str, str] | None:
        """Send every file's rows as CopyData; PostgreSQL's error if it stops the COPY early."""
        assert self.server is not None
        line = 0
        for file in files:
            parquet = self.standin.s3.read(file)
            width = len(parquet.schema_arrow)
            if width != len(columns):
                raise RowError(
                    1202 if width > len(columns) else 1203,
                    f"The file has {width} columns, the table (or column list) "
                    f"{len(columns)}; Parquet columns load by position",
                    file_url=file.url,
                )
            span = Span(file, line + 1, 0)
            spans.append(span)
            for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, use_threads=False):
                validate_batch(batch, columns, file.url, span.rows)
                data = render_batch(batch, columns)
                for start in range(0, len(data), COPY_DATA_CHUNK):
                    self.server.send(message(b"d", data[start : start + COPY_DATA_CHUNK]))
                span.rows += batch.num_rows
                if (failed := self._copy_interrupted()) is not None:
                    return failed
            line += span.rows
        return None

    def _copy_interrupted(self) -> dict[str, str] | None:
        assert self.server is not None
        while self.server.readable_now():
            kind, body = self.server.read_message()
            if kind == b"E":
                self.server.send(message(b"c"))  # ignored by PostgreSQL after its error
                return error_fields(body)
            self._to_client(kind, body)
        return None

    def _locate(
        self, fields: dict[str, str], spans: list[Span], columns: list[Column | None]
    ) -> RowError | None:
        """PostgreSQL's COPY error as a Redshift load error, via its CONTEXT line."""
        match = re.search(r", line (\d+)(?:, column (.*?))?(?:: (.*))?$", fields.get("W", ""), re.M)
        if match is None:
            return None
        line = int(match.group(1))
        column_name = match.group(2) or fields.get("c", "")
        index = next((i for i, c in enumerate(columns) if c and c.name == column_name), None)
        column = columns[index] if index is not None else None
        error = RowError(
            redshift_error_code(fields.get("C", ""), column.typname if column else ""),
            fields.get("M", "error"),
            column=column,
            column_name=column_name,
        )
        span = next((s for s in spans if s.first <= line < s.first + max(s.rows, 1)), None)
        if span is None:
            return error
        error.file_url, error.line = span.file.url, line - span.first + 1
        with contextlib.suppress(Exception):  # the raw value is a courtesy: re-read the row
            table = self.standin.s3.read(span.file).read(use_threads=False)
            batch = table.slice(error.line - 1, 1).combine_chunks().to_batches()[0]
            error.raw_line = raw_line_text(batch, 0)
            if index is not None:
                error.raw_value = python_text(batch.column(index)[0].as_py())
        if not error.raw_value and match.group(3):
            error.raw_value = match.group(3).strip('"')
        return error


# =========================================================================== the server


class StandIn:
    """Accepts connections and runs one Session per connection in its own thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.diagnostics = Diagnostics(settings)
        self.s3 = S3Files(settings)
        self.tls_context: ssl.SSLContext | None = None
        if settings.tls_cert and settings.tls_key:
            self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_context.load_cert_chain(settings.tls_cert, settings.tls_key)
        self._sessions: set[Session] = set()
        self._lock = threading.Lock()

    def prepare_database(self) -> None:
        """Create the system tables in the stand-in database, retrying until PostgreSQL is up."""
        warned = False
        while not self.stopping.is_set():
            try:
                self.diagnostics.ensure(self.settings.database)
                log.info("system tables ready in database %s", self.settings.database)
                return
            except psycopg.Error as exc:
                if not warned:
                    log.info("waiting for database %s: %s", self.settings.database, exc)
                    warned = True
                self.stopping.wait(0.5)

    def serve_forever(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.settings.listen_host, self.settings.port))
        listener.listen(128)
        listener.settimeout(0.5)
        log.info(
            "listening on %s:%d -> PostgreSQL %s:%d (server_version %s, TLS %s)",
            self.settings.listen_host, self.settings.port, self.settings.postgres_host,
            self.settings.postgres_port, self.settings.server_version,
            "on" if self.tls_context else "off",
        )  # fmt: skip
        threading.Thread(target=self.prepare_database, name="prepare", daemon=True).start()
        try:
            while not self.stopping.is_set():
                try:
                    sock, address = listener.accept()
                except TimeoutError:
                    continue
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                session = Session(self, sock, f"{address[0]}:{address[1]}")
                with self._lock:
                    self._sessions.add(session)
                threading.Thread(
                    target=self._serve, args=(session,), name="session", daemon=True
                ).start()
        finally:
            listener.close()
            self.shutdown()

    def _serve(self, session: Session) -> None:
        try:
            session.run()
        finally:
            with self._lock:
                self._sessions.discard(session)

    def shutdown(self) -> None:
        self.stopping.set()
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.close()
        self.diagnostics.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("S3RS_STACK_REDSHIFT_PORT", "5439"))
    )
    parser.add_argument("--server-version", default=REDSHIFT_SERVER_VERSION)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stdout,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(message)s",
    )
    logging.getLogger("botocore").setLevel(logging.WARNING)
    standin = StandIn(Settings.from_environment(args))

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        standin.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: thread stacks
    standin.serve_forever()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
