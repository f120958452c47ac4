"""The Python logging cookbook's socket receiver, the baseline a Python shop starts from.

A ThreadingTCPServer with one thread per connection unpickles the records
that logging.handlers.SocketHandler sends and hands them to a logger with a
FileHandler. Unpickling runs code chosen by the peer, so it only ever
listens on 127.0.0.1 here.

    python -m benchmarks.cookbook_receiver --port-file F --output FILE
"""

import argparse
import logging
import os
import pickle
import signal
import socket
import socketserver
import struct
import sys
import threading
from typing import List, Optional

LENGTH = struct.Struct('>L')
LOGGER_NAME = 'bench'


def receive_exactly(connection: socket.socket, size: int) -> bytes:
    """`size` bytes, or fewer only at EOF. The cookbook's own loop, applied to the
    length prefix too: a bare recv(4) can return part of it and drop the connection."""
    data = connection.recv(size)
    while data and len(data) < size:
        more = connection.recv(size - len(data))
        if not more:
            break
        data += more
    return data


class RecordStreamHandler(socketserver.StreamRequestHandler):
    """Reads length-prefixed pickles until EOF and logs each as a record, with
    the cookbook's two recv calls per record."""

    def handle(self) -> None:
        while True:
            header = receive_exactly(self.connection, LENGTH.size)
            if len(header) < LENGTH.size:
                return
            data = receive_exactly(self.connection, LENGTH.unpack(header)[0])
            record = logging.makeLogRecord(pickle.loads(data))
            logging.getLogger(record.name).handle(record)


class RecordReceiver(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


def serve(port_file: str, output: str) -> None:
    """Write records to `output`; the bound port goes to `port_file` once listening."""
    handler = logging.FileHandler(output)
    handler.setFormatter(logging.Formatter('%(asctime)s - %(name)s - %(message)s'))
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    server = RecordReceiver(('127.0.0.1', 0), RecordStreamHandler)
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=server.shutdown).start())
    with open(port_file + '.tmp', 'w') as ports:
        ports.write('%d\n' % server.server_address[1])
    os.rename(port_file + '.tmp', port_file)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        handler.close()


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--port-file', required=True, help='where to write the bound TCP port')
    parser.add_argument('--output', required=True, help='the log file to append records to')
    args = parser.parse_args(argv)
    serve(args.port_file, args.output)


if __name__ == '__main__':
    sys.exit(main())
