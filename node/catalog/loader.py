"""Reading a dataset through an agreement: the only way data leaves the catalog.

The loader checks the agreement (active, in its window, allowing the mode, and
naming this node as the provider of the dataset), then reads the dataset in
batches (see :mod:`node.catalog.source`) and applies the column treatments
to each batch. Memory stays bounded by a few batches, never the table.

Invariants:

* only columns the agreement names, minus dropped ones, are ever read from disk;
* the agreement is re-checked before every batch, so a revocation or expiry
  stops a running read at the next batch;
* a read that fails raises a :class:`CatalogError` naming the dataset (and,
  for a CSV value that no longer converts, its column and line), never a
  value: the message is recorded in the ledger. Arrow's message goes to the
  local log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pyarrow as pa

from node.agreements.policy import authorize, recheck
from node.agreements.store import AgreementRecord
from node.catalog import treatments
from node.catalog.registry import Catalog, DatasetInfo
from node.catalog.source import read_batches
from node.catalog.verify import conversion_site
from node.errors import AgreementError, CatalogError

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

__all__ = [
    "SCAN_BATCH_ROWS",
    "TreatedScan",
    "catalog_of",
    "load_treated_table",
    "open_treated_reader",
    "treated_scan",
]

#: Rows per scanned batch; large batches keep per-batch overhead low.
SCAN_BATCH_ROWS = 256 * 1024
log = logging.getLogger("fednode.catalog")
_EXTENSION = "catalog"
_lock = threading.Lock()


def catalog_of(runtime: NodeRuntime) -> Catalog:
    """The runtime's catalog, opened on first use under the data directory."""
    with _lock:
        catalog = runtime.extensions.get(_EXTENSION)
        if not isinstance(catalog, Catalog):
            catalog = Catalog(runtime.config.data_dir / "catalog.db")
            runtime.extensions[_EXTENSION] = catalog
        return catalog


class TreatedScan:
    """A treated, lazily scanned view of one dataset under one agreement."""

    def __init__(
        self,
        catalog: Catalog,
        record: AgreementRecord,
        *,
        columns: list[str] | None = None,
        batch_rows: int = SCAN_BATCH_ROWS,
        before_batch: Callable[[], None] | None = None,
    ) -> None:
        """Prepare the scan; nothing is read until :meth:`batches` is iterated.

        Raises:
            CatalogError: the dataset is unknown, unreadable, or changed.
            AgreementError: the agreement names columns the dataset lacks, or
                ``columns`` asks for one it does not share.
        """
        signed = record.signed
        if record.pseudonym_key is None:
            raise AgreementError(
                f"agreement {signed.id} has no pseudonym key here: this node is not its provider"
            )
        self.info, self._dataset = catalog.open(signed.dataset)
        spec = signed.columns
        schema = treatments.treated_schema(self.info.schema, spec)
        if columns is not None:
            outside = sorted(set(columns) - set(schema.names))
            if outside:
                raise AgreementError(f"columns not shared by {signed.id}: {', '.join(outside)}")
            schema = pa.schema([f for f in schema if f.name in columns])
        self.schema = schema
        self._spec = spec
        self._key = record.pseudonym_key
        self._batch_rows = batch_rows
        self._before_batch = before_batch

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Yield treated batches.

        Raises:
            CatalogError: the data cannot be read.
            AgreementError: treatment failed, or ``before_batch`` refused.
        """
        try:
            for batch in read_batches(self._dataset, self.schema.names, self._batch_rows):
                if self._before_batch is not None:
                    self._before_batch()
                if batch.num_rows:
                    yield treatments.apply(batch, self._spec, self.schema, self._key)
        except (pa.ArrowException, OSError, ValueError) as e:
            raise _read_error(self.info, e) from e

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self.batches())


def _read_error(info: DatasetInfo, error: Exception) -> CatalogError:
    """A share's read failure, without Arrow's message.

    The message goes into the ledger (``share.failed``), and Arrow's may quote
    values, even of columns the agreement pseudonymizes (a CSV value that no
    longer converts, a row that no longer parses). It goes to the local log.
    """
    log.warning("dataset %s could not be read for a share: %s", info.name, error)
    hint = (
        f"'fednode dataset show {info.name}' tells whether its data changed; "
        f"'fednode dataset add {info.name} {info.path} --replace' reads it in full and "
        "shows the operator the value at fault"
    )
    site = conversion_site(error, info.schema)
    if site is not None:
        return CatalogError(
            f"column {site.column!r} of dataset {info.name!r} holds a value at {site.at} "
            f"that is not {site.type} as registered",
            hint=hint,
        )
    if isinstance(error, FileNotFoundError):
        return CatalogError(f"a file of dataset {info.name!r} is gone", hint=hint)
    return CatalogError(
        f"dataset {info.name!r} could not be read ({type(error).__name__}); its data may be "
        "damaged or changed since it was registered",
        hint=hint + "; the node log shows the cause",
    )


def treated_scan(
    runtime: NodeRuntime,
    agreement_id: str,
    mode: str,
    *,
    peer: str | None = None,
    columns: list[str] | None = None,
    batch_rows: int = SCAN_BATCH_ROWS,
) -> TreatedScan:
    """Authorize ``mode`` on the agreement as its provider, then prepare a treated scan.

    Raises:
        AccessDenied: the agreement does not grant this (recorded as access.denied).
        AgreementError: the agreement does not fit the dataset.
        CatalogError: the dataset is unknown or unreadable.
    """
    record = authorize(
        runtime, agreement_id, mode=mode, role="provider", peer=peer, columns=columns
    )
    return TreatedScan(
        catalog_of(runtime),
        record,
        columns=columns,
        batch_rows=batch_rows,
        before_batch=lambda: recheck(runtime, agreement_id),
    )


def open_treated_reader(runtime: NodeRuntime, agreement_id: str, mode: str) -> pa.RecordBatchReader:
    """A batch reader over the agreement's dataset with its treatments applied.

    Raises:
        AccessDenied: the agreement is missing, not active, outside its window,
            revoked, does not allow ``mode``, or names another provider.
        AgreementError: the agreement does not fit the dataset.
        CatalogError: the dataset is unknown, unreadable, or changed.
    """
    return treated_scan(runtime, agreement_id, mode).reader()


def load_treated_table(runtime: NodeRuntime, agreement_id: str, mode: str) -> pa.Table:
    """The whole treated table in memory; for small datasets (e.g. federated training).

    Raises:
        AccessDenied, AgreementError, CatalogError: as :func:`open_treated_reader`.
    """
    scan = treated_scan(runtime, agreement_id, mode)
    return pa.Table.from_batches(list(scan.batches()), schema=scan.schema)
