"""Manifests: what each audit stored, in a Merkle tree, chained to the audit before it, optionally signed.

After its records, every audit (and every fetch flow run) writes one manifest under
``parallel-run-inputs/_manifests/<chain>/<sequence>-<sha256>.json``:

* ``entries``: one ``[run_id, status, sha256, record_key, record_sha256, content_record_sha256]`` per run,
  sorted by run id: the input's hash, the whole-record hash of the ``latest.json`` the audit wrote, and
  that of the content record it names;
* ``merkle_root``: an RFC 6962 Merkle tree over the entries (leaf ``sha256(0x00 || entry)``, node
  ``sha256(0x01 || left || right)``), so one run's inclusion is proven with about log2(n) hashes;
* ``previous``: the sha256 of the chain's manifest before it (its file's bytes), like git's parent commit.

A chain belongs to a deployment (``flow/deployment``), or to a flow name for ad-hoc runs. On a local
filesystem the append is serialized by a lock file, so concurrent audits never fork a chain; on other
storage two appends may name the same previous manifest: a fork, which ``verify`` reports and accepts
(the next append follows ``head.json``). With a key configured (``PARALLEL_MANIFEST_SIGNING_BLOCK``:
a Secret block holding an HMAC key, or an Ed25519 private key in PEM), each manifest is signed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from parallel_tasks.ledger import ENTRY_FIELDS, AuditLedger, manifest_entry
from parallel_tasks.models import RunInputRecord
from parallel_tasks.records import RECORD_PREFIX, _path_segment, canonical_json
from parallel_tasks.settings import SIGNING_BLOCK_ENV_VAR, get_settings
from parallel_tasks.storage import _local_folder, _read, _write, is_missing, write_streamed

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    from prefect.filesystems import WritableFileSystem

__all__ = [
    "ENTRY_FIELDS",
    "MANIFEST_PREFIX",
    "SIGNING_BLOCK_ENV_VAR",
    "ManifestKey",
    "MerkleTree",
    "WrittenManifest",
    "append_manifest",
    "build_manifest",
    "chain_folder",
    "inclusion_proof",
    "leaf_hash",
    "manifest_entry",
    "manifest_key",
    "merkle_root",
    "signed_message",
    "verify_inclusion",
    "write_audit_manifest",
    "write_manifest",
]

MANIFEST_PREFIX = f"{RECORD_PREFIX}/_manifests"
MANIFEST_VERSION = 1
HEAD_NAME = "head.json"
LOCK_NAME = ".lock"
LOCK_TIMEOUT_S = 120.0
_SIGNATURE_DOMAIN = b"prefect-parallel-tasks manifest v1\n"
_ENTRIES_MARK = b'"entries":[]'
_ENTRIES_PER_WRITE = 1000


# --- Merkle tree (RFC 6962 / RFC 9162) -----------------------------------------------------------


def leaf_hash(entry: Sequence[Any]) -> bytes:
    """The hash of one entry as a leaf: domain-separated from inner nodes."""
    return _leaf(canonical_json(list(entry)))


def _leaf(encoded_entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + encoded_entry).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class MerkleTree:
    """RFC 6962's Merkle tree hash, computed as the leaf hashes come: it holds one subtree root per bit of the
    leaf count, so a manifest of any size is hashed in a few hundred bytes."""

    def __init__(self) -> None:
        self._subtrees: list[tuple[int, bytes]] = []  # (leaves, root) of complete subtrees, largest first

    def add(self, leaf: bytes) -> None:
        size, node = 1, leaf
        while self._subtrees and self._subtrees[-1][0] == size:
            size, node = 2 * size, _node(self._subtrees.pop()[1], node)
        self._subtrees.append((size, node))

    def root(self) -> bytes:
        """The root: the complete subtrees joined right to left (the tree splits at the largest power of two)."""
        if not self._subtrees:
            return hashlib.sha256(b"").digest()
        root = self._subtrees[-1][1]
        for _, node in reversed(self._subtrees[:-1]):
            root = _node(node, root)
        return root


def merkle_root(leaves: Iterable[bytes]) -> bytes:
    """The Merkle tree hash of the leaf hashes (RFC 6962)."""
    tree = MerkleTree()
    for leaf in leaves:
        tree.add(leaf)
    return tree.root()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` (RFC 6962 PATH(m, D[n])), nearest sibling first."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} is outside a tree of {len(leaves)}")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(leaves[:k], index), merkle_root(leaves[k:])]
    return [*inclusion_proof(leaves[k:], index - k), merkle_root(leaves[:k])]


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Check an audit path against a root (RFC 9162, section 2.1.3.2)."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and hmac.compare_digest(r, root)


# --- signing -------------------------------------------------------------------------------------


class ManifestKey:
    """A key that signs manifests (HMAC-SHA256 or Ed25519) or checks their signatures.

    Build it from a secret's text (an HMAC key, or an Ed25519 private key in PEM) or from an Ed25519
    public key in PEM, which can only check. Its repr never shows the key.
    """

    def __init__(
        self,
        *,
        hmac_key: bytes | None = None,
        private: Ed25519PrivateKey | None = None,
        public: Ed25519PublicKey | None = None,
    ) -> None:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self._hmac, self._private = hmac_key, private
        self._public = private.public_key() if private is not None else public
        if self._hmac is not None:
            self.algorithm = "hmac-sha256"
            self.key_id = hmac.new(self._hmac, b"key-id", hashlib.sha256).hexdigest()[:16]
        elif self._public is not None:
            self.algorithm = "ed25519"
            raw = self._public.public_bytes(Encoding.Raw, PublicFormat.Raw)
            self.key_id = hashlib.sha256(raw).hexdigest()[:16]
        else:
            raise ValueError("a manifest key needs an HMAC key, an Ed25519 private key or an Ed25519 public key")

    def __repr__(self) -> str:
        return f"ManifestKey({self.algorithm}, key_id={self.key_id})"

    @classmethod
    def from_secret(cls, text: str) -> ManifestKey:
        """An Ed25519 private key when ``text`` is one in PEM, else ``text`` as an HMAC key."""
        if "PRIVATE KEY-----" in text:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            key = load_pem_private_key(text.encode(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"the private key is {type(key).__name__}, not Ed25519")
            return cls(private=key)
        if len(text.strip()) < 16:
            raise ValueError("an HMAC signing key must be at least 16 characters")
        return cls(hmac_key=text.strip().encode())

    @classmethod
    def from_public_pem(cls, data: bytes) -> ManifestKey:
        """A key that checks Ed25519 signatures."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        key = load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"the public key is {type(key).__name__}, not Ed25519")
        return cls(public=key)

    def sign(self, message: bytes) -> dict[str, str]:
        """The ``signature`` field of a manifest over ``message``."""
        if self._hmac is not None:
            value = hmac.new(self._hmac, message, hashlib.sha256).hexdigest()
        elif self._private is not None:
            value = self._private.sign(message).hex()
        else:
            raise ValueError("a public key cannot sign")
        return {"algorithm": self.algorithm, "key_id": self.key_id, "value": value}

    def problem(self, message: bytes, signature: Any) -> str | None:
        """Why ``signature`` is not a valid signature of ``message`` by this key, or ``None`` if it is."""
        if not isinstance(signature, dict):
            return "it is not signed"
        if signature.get("algorithm") != self.algorithm or signature.get("key_id") != self.key_id:
            return f"signed with {signature.get('algorithm')} key {signature.get('key_id')}, not {self.key_id}"
        value = str(signature.get("value", ""))
        if self._hmac is not None:
            expected = hmac.new(self._hmac, message, hashlib.sha256).hexdigest()
            return None if hmac.compare_digest(expected, value) else "wrong signature"
        from cryptography.exceptions import InvalidSignature

        assert self._public is not None
        try:
            self._public.verify(bytes.fromhex(value), message)
        except (InvalidSignature, ValueError):
            return "wrong signature"
        return None


def signed_message(manifest: dict[str, Any]) -> bytes:
    """What a signature covers: the sha256 of the manifest's canonical JSON without its signature."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return _signed(hashlib.sha256(canonical_json(body)).hexdigest())


def _signed(body_sha256: str) -> bytes:
    return _SIGNATURE_DOMAIN + body_sha256.encode()


# --- building and writing ------------------------------------------------------------------------


def chain_folder(chain: str) -> str:
    """Storage folder of a chain's manifests."""
    return f"{MANIFEST_PREFIX}/{_path_segment(chain)}"


def manifest_key(chain: str, sequence: int, sha256: str) -> str:
    """Storage key of a manifest: sortable by sequence, named by its own hash."""
    return f"{chain_folder(chain)}/{sequence:08d}-{sha256}.json"


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


def build_manifest(
    records: Iterable[RunInputRecord],
    *,
    chain: str,
    sequence: int,
    previous: Sequence[str],
    flow_run_id: str | None,
    created_at: datetime | None = None,
    key: ManifestKey | None = None,
) -> dict[str, Any]:
    """The manifest of an audit's records (one entry per run id: the last record given wins); a run whose
    record could not be written (``not_stored``) is not in the store, so not in its manifest."""
    file = io.BytesIO()
    with AuditLedger.of(records) as ledger:
        fields = _manifest_fields(ledger, chain, sequence, previous, flow_run_id, created_at)
        write_manifest(file, ledger, fields, key)
    manifest: dict[str, Any] = json.loads(file.getvalue())
    return manifest


def _manifest_fields(
    ledger: AuditLedger,
    chain: str,
    sequence: int,
    previous: Sequence[str],
    flow_run_id: str | None,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """Every field of a manifest but its entries, Merkle root and signature, which the writing adds."""
    created = created_at or datetime.now(timezone.utc)
    started = ledger.first_fetched_at() or created
    return {
        "manifest_version": MANIFEST_VERSION,
        "chain": chain,
        "sequence": sequence,
        "previous": sorted(previous),
        "flow_run_id": flow_run_id,
        "started_at": _iso(min(started, created)),
        "created_at": _iso(created),
        "entry_fields": list(ENTRY_FIELDS),
        "count": ledger.stored,
    }


def write_manifest(
    file: BinaryIO, ledger: AuditLedger, fields: dict[str, Any], key: ManifestKey | None
) -> tuple[str, str]:
    """Write a manifest's canonical JSON to ``file`` as its entries are read from the ledger, hashing as it goes
    (its Merkle root, then the signature over the rest, come after the entries in key order); return its sha256
    and its Merkle root.
    The entries are never all in memory: a manifest of a million runs costs what one of a thousand does."""
    before, _, _ = canonical_json({**fields, "entries": []}).partition(_ENTRIES_MARK)
    whole, tree = hashlib.sha256(), MerkleTree()

    def put(piece: bytes) -> None:
        file.write(piece)
        whole.update(piece)

    put(before + b'"entries":[')
    separator = b""
    for chunk in _chunks(ledger.entries(), _ENTRIES_PER_WRITE):
        encoded = [canonical_json(entry) for entry in chunk]
        for entry in encoded:
            tree.add(_leaf(entry))
        put(separator + b",".join(encoded))
        separator = b","
    put(b"]")
    fields = {**fields, "merkle_root": tree.root().hex()}
    if key is not None:
        unsigned = whole.copy()
        unsigned.update(_after_entries(fields))
        fields["signature"] = key.sign(_signed(unsigned.hexdigest()))
    put(_after_entries(fields))
    return whole.hexdigest(), fields["merkle_root"]


def _after_entries(fields: dict[str, Any]) -> bytes:
    """The canonical JSON of the fields that sort after ``entries``, with the closing brace."""
    return canonical_json({**fields, "entries": []}).partition(_ENTRIES_MARK)[2]


def _chunks(items: Iterator[list[str | None]], size: int) -> Iterator[list[list[str | None]]]:
    while chunk := list(islice(items, size)):
        yield chunk


@dataclass(frozen=True)
class WrittenManifest:
    """Where a manifest went and what identifies it."""

    chain: str
    sequence: int
    key: str
    sha256: str
    merkle_root: str
    count: int
    previous: tuple[str, ...]
    signed: bool


@contextlib.asynccontextmanager
async def _chain_lock(storage: Any, chain: str) -> AsyncIterator[None]:
    """An exclusive lock on a local chain folder (other storage has no lock: forks are possible there)."""
    folder = _local_folder(storage)
    try:
        import fcntl
    except ImportError:  # not on this platform: like remote storage
        folder = None
    if folder is None:
        yield
        return
    lock_path = Path(folder) / chain_folder(chain) / LOCK_NAME
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    message = f"the manifest chain {chain!r} stayed locked for {LOCK_TIMEOUT_S:.0f} s"
                    raise TimeoutError(message) from None
                await asyncio.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def _read_head(storage: Any, chain: str) -> dict[str, Any] | None:
    """The chain's head, or ``None`` for a chain not started yet. A head that cannot be read, or one missing
    from a chain that has manifests, raises: starting the chain again would fork it, a false tamper alarm."""
    try:
        head = json.loads(await _read(storage, f"{chain_folder(chain)}/{HEAD_NAME}"))
    except Exception as error:
        if not is_missing(error):
            raise RuntimeError(f"the head of the manifest chain {chain!r} could not be read: {error!r}") from None
        head = None
    else:
        if isinstance(head, dict) and {"sequence", "manifest_sha256"} <= head.keys():
            return head
        raise RuntimeError(f"the head of the manifest chain {chain!r} is not a head: {str(head)[:80]!r}")
    folder = _local_folder(storage)
    if folder is not None and any(Path(folder, chain_folder(chain)).glob("*.json")):
        raise RuntimeError(f"the manifest chain {chain!r} has manifests but no {HEAD_NAME}; not starting it again")
    return None


async def append_manifest(
    storage: WritableFileSystem | Any,
    records: Iterable[RunInputRecord] | AuditLedger,
    *,
    chain: str,
    flow_run_id: str | None,
    key: ManifestKey | None = None,
) -> WrittenManifest:
    """Write the manifest of ``records`` (or of an audit's ledger) after the chain's head, then move
    ``head.json`` to it. The manifest is written as it is made: on a local filesystem it is never whole in memory."""
    if not isinstance(records, AuditLedger):
        with AuditLedger.of(records) as ledger:
            return await append_manifest(storage, ledger, chain=chain, flow_run_id=flow_run_id, key=key)
    async with _chain_lock(storage, chain):
        head = await _read_head(storage, chain)
        previous = [str(head["manifest_sha256"])] if head else []
        sequence = int(head["sequence"]) + 1 if head else 1
        fields = _manifest_fields(records, chain, sequence, previous, flow_run_id)
        made: list[tuple[str, str]] = []

        def write(file: BinaryIO) -> str:
            made.append(write_manifest(file, records, fields, key))
            return manifest_key(chain, sequence, made[0][0])

        path = await write_streamed(storage, chain_folder(chain), write)
        digest, root = made[0]
        pointer = {"chain": chain, "sequence": sequence, "manifest_sha256": digest, "key": path}
        await _write(storage, f"{chain_folder(chain)}/{HEAD_NAME}", canonical_json(pointer))
    return WrittenManifest(chain, sequence, path, digest, root, fields["count"], tuple(previous), key is not None)


# --- in a flow -----------------------------------------------------------------------------------


def _chain_and_flow_run() -> tuple[str, str | None]:
    """``flow/deployment`` for a deployment's run, the flow name for an ad-hoc one; and the flow run id."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    flow_run = context.flow_run if context is not None else None
    if flow_run is None:
        return "ad-hoc", None
    flow_name = context.flow.name if context is not None and context.flow is not None else "flow"
    if flow_run.deployment_id is not None:
        from prefect.runtime import deployment

        return f"{flow_name}/{deployment.name or flow_run.deployment_id}", str(flow_run.id)
    return flow_name, str(flow_run.id)


async def _signing_key() -> ManifestKey | None:
    name = get_settings().manifest_signing_block
    if not name:
        return None
    from parallel_tasks.credentials import aload_signing_secret

    return ManifestKey.from_secret(await aload_signing_secret(name))


async def _write_and_publish(
    records: Iterable[RunInputRecord] | AuditLedger, storage: WritableFileSystem | str | Path | None
) -> WrittenManifest:
    from prefect.events import emit_event

    from parallel_tasks.storage import resolve_storage

    chain, flow_run_id = _chain_and_flow_run()
    written = await append_manifest(
        await resolve_storage(storage), records, chain=chain, flow_run_id=flow_run_id, key=await _signing_key()
    )
    related = [{"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run"}]
    emit_event(
        event="parallel.audit.manifest.written",
        resource={"prefect.resource.id": f"parallel.audit-chain.{chain}", "prefect.resource.name": chain},
        related=related if flow_run_id else [],
        payload={
            "chain": chain,
            "sequence": written.sequence,
            "manifest_sha256": written.sha256,
            "manifest_key": written.key,
            "merkle_root": written.merkle_root,
            "count": written.count,
            "previous": list(written.previous),
            "signed": written.signed,
        },
    )
    return written


def write_audit_manifest(
    records: Iterable[RunInputRecord] | AuditLedger, storage: WritableFileSystem | str | Path | None = None
) -> str | None:
    """Write the manifest of a flow run's records to its chain, publish it as an event, log it, and return
    its sha256 (for the run's summary artifact and state message). Call it once, after the records.

    A manifest that cannot be written (storage or signing key unusable) is logged as an error and gives
    ``None``: the run's records and summary are kept, and ``verify`` will name its runs as uncovered.
    """
    from prefect.logging import get_run_logger
    from prefect.utilities.asyncutils import run_coro_as_sync

    from parallel_tasks.redaction import redact_text

    try:
        written = run_coro_as_sync(_write_and_publish(records, storage))
    except Exception as exc:
        with contextlib.suppress(Exception):  # outside a run there is no run logger
            get_run_logger().error("Manifest not written: %s", redact_text(f"{type(exc).__name__}: {exc}", ()))
        return None
    assert written is not None
    with contextlib.suppress(Exception):  # outside a run there is no run logger; the event still went out
        get_run_logger().info(
            "Manifest %d of chain %r: %d runs, Merkle root %s, sha256 %s (%s)",
            written.sequence,
            written.chain,
            written.count,
            written.merkle_root,
            written.sha256,
            written.key,
        )
    return written.sha256
