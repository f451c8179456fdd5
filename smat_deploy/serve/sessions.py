"""Interactive sessions for ``smat-deploy serve``: a photo is embedded once, and every click reuses its embedding.

:class:`SessionCache` keeps the embeddings (:class:`~smat_deploy.runtime.predictor.PhotoEmbedding`, or
anything with an ``nbytes`` attribute) under unguessable session ids, bounded by a count and by a number of
bytes. When either bound would be exceeded, the least recently used sessions go first; ``get`` counts as a
use. A session id the cache does not hold (never issued, evicted or ended) is :class:`UnknownSession`.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

from smat_deploy.errors import SmatError

#: Session ids are ``SESSION_ID_BYTES`` random bytes written as lowercase hex.
SESSION_ID_BYTES = 16
#: How much of an unknown session id an error message repeats.
_ID_SHOWN = 64


class UnknownSession(SmatError):
    """A session id the server does not hold: never issued, evicted to make room, or ended."""


def show_id(session_id: object) -> str:
    """A session id as an error message shows it: printable, quoted, and never longer than ``_ID_SHOWN``."""
    if isinstance(session_id, bytes):
        session_id = session_id.decode("utf-8", errors="replace")
    text = str(session_id)
    shown = repr(text[:_ID_SHOWN])
    return shown if len(text) <= _ID_SHOWN else f"{shown}..."


@dataclass
class SessionStats:
    """What the cache did: sessions held now, their bytes, and hits, misses and evictions so far."""

    count: int = 0
    bytes: int = 0
    created: int = 0
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    ended: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class SessionCache:
    """Embeddings by session id, least recently used first out; safe to use from many threads at once.

    ``max_count``: most sessions held at once. ``max_bytes``: most bytes (the embeddings' ``nbytes``)
    held at once; an embedding larger than that on its own is refused.
    """

    def __init__(self, max_count: int, max_bytes: int) -> None:
        if max_count < 1:
            raise SmatError(f"the session count must be at least 1, got {max_count}")
        if max_bytes < 1:
            raise SmatError(f"the session memory must be positive, got {max_bytes} bytes")
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, object] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stats = SessionStats()

    @staticmethod
    def _size(embedding: object) -> int:
        size = getattr(embedding, "nbytes", None)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise SmatError(f"cannot cache {type(embedding).__name__}: it has no byte size (nbytes)")
        return size

    def put(self, embedding: object) -> str:
        """Hold ``embedding`` under a new session id (evicting the least recently used as needed); the id."""
        size = self._size(embedding)
        if size > self.max_bytes:
            raise SmatError(
                f"this photo's embedding takes {size / 1e6:.1f} MB, more than the whole session memory "
                f"({self.max_bytes / 1e6:.1f} MB, --session-memory): send a smaller photo or raise --session-memory"
            )
        session_id = secrets.token_hex(SESSION_ID_BYTES)
        with self._lock:
            while self._items and (len(self._items) >= self.max_count or self._stats.bytes + size > self.max_bytes):
                oldest, _ = self._items.popitem(last=False)
                self._stats.bytes -= self._sizes.pop(oldest)
                self._stats.evictions += 1
            self._items[session_id] = embedding
            self._sizes[session_id] = size
            self._stats.bytes += size
            self._stats.created += 1
            self._stats.count = len(self._items)
        return session_id

    def get(self, session_id: object) -> object:
        """The embedding of ``session_id``, now the most recently used; :class:`UnknownSession` if not held."""
        key = _key(session_id)
        with self._lock:
            embedding = self._items.get(key) if key is not None else None
            if embedding is None:
                self._stats.misses += 1
            else:
                self._items.move_to_end(key)
                self._stats.hits += 1
        if embedding is None:
            raise UnknownSession(
                f"unknown or expired session {show_id(session_id)}: embed the photo again for a new session id"
            )
        return embedding

    def drop(self, session_id: object) -> bool:
        """End a session; whether it was held."""
        key = _key(session_id)
        with self._lock:
            if key is None or key not in self._items:
                return False
            del self._items[key]
            self._stats.bytes -= self._sizes.pop(key)
            self._stats.ended += 1
            self._stats.count = len(self._items)
            return True

    def __contains__(self, session_id: object) -> bool:
        key = _key(session_id)
        with self._lock:
            return key is not None and key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def stats(self) -> SessionStats:
        """A snapshot of the counters."""
        with self._lock:
            return SessionStats(**self._stats.__dict__)


def _key(session_id: object) -> str | None:
    """The cache key of a session id given as ``str`` or ``bytes``; None for anything that cannot be one."""
    if isinstance(session_id, bytes):
        try:
            session_id = session_id.decode("ascii")
        except UnicodeDecodeError:
            return None
    return session_id if isinstance(session_id, str) else None
