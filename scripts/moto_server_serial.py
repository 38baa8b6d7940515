"""moto's server answering one request at a time (scripts/moto.sh runs this instead of `moto_server`).

`moto_server` serves on a threaded werkzeug server, but moto's in-memory DynamoDB is not safe under
concurrent requests: under the worker's concurrent conditional writes it fails a share of them with
HTTP 500 ("dictionary changed size during iteration"). Real DynamoDB serialises writes per item and
never does that, so the tests and the benchmarks serialise the requests instead. Single-threaded,
werkzeug answers HTTP/1.0 and closes each connection, so no client's kept-alive connection can hold
the server. Usage: python moto_server_serial.py HOST PORT
"""

import os
import sys

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, app, threaded=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
