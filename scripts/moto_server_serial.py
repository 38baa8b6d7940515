"""moto's server answering one request at a time (scripts/moto.sh runs this instead of `moto_server`).

`moto_server` serves on a threaded werkzeug server, but moto's in-memory DynamoDB is not safe under
concurrent requests: under the worker's concurrent conditional writes it fails a share of them with
HTTP 500 ("dictionary changed size during iteration"). Real DynamoDB serialises writes per item and
never does that, so the tests and the benchmarks serialise the requests instead. Single-threaded,
werkzeug answers HTTP/1.0 and closes each connection, so no client's kept-alive connection can hold
the server. Usage: python moto_server_serial.py HOST PORT
"""

import copy
import os
import sys

from werkzeug.serving import run_simple

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models.table import Table
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


class _SameTable:
    """Stands in for `copy` inside moto's DynamoDB backend: `deepcopy` of a whole table returns the
    table itself, anything else is copied as before."""

    @staticmethod
    def deepcopy(value, memo=None):
        if isinstance(value, Table):
            return value
        return copy.deepcopy(value, memo)


def transact_write_items_backing_up_items(self, transact_items):
    """moto's TransactWriteItems backs up every table it touches with a deep copy, so each
    transaction costs time (and garbage) in proportion to the whole table: a usage run of a few
    thousand items slows the server to a few requests a second. This backs up only the items the
    transaction names, which is all a rollback needs, and restores them if it is cancelled."""
    backups = []
    for entry in transact_items:
        _, op = next(iter(entry.items()))
        table = self.tables.get(op.get("TableName"))
        if table is None:
            continue
        if "Item" in op:
            key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
            if table.range_key_attr is not None:
                key[table.range_key_attr] = op["Item"][table.range_key_attr]
        else:
            key = op.get("Key")
        if key is None:
            continue
        current = self.get_item(op["TableName"], key)
        backups.append((op["TableName"], key, copy.deepcopy(current)))
    try:
        with _tables_not_copied():
            _original_transact_write_items(self, transact_items)
    except Exception:
        for table_name, key, before in reversed(backups):
            if before is None:
                if self.get_item(table_name, key) is not None:
                    self.delete_item(table_name, key)
            else:
                self.put_item(table_name, before.to_json()["Attributes"])
        raise


class _tables_not_copied:
    def __enter__(self):
        dynamodb_models.copy = _SameTable

    def __exit__(self, *exc):
        dynamodb_models.copy = copy


_original_transact_write_items = dynamodb_models.DynamoDBBackend.transact_write_items
dynamodb_models.DynamoDBBackend.transact_write_items = transact_write_items_backing_up_items


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, app, threaded=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
