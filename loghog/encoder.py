"""Per-handler record encoder: the bytes of protocol.encode_message at a quarter of its cost.

A handler sends the same app_id and hostname in every record, so their JSON
is rendered once and each record only escapes its own module and body, with
the same escaping function json.dumps uses (ensure_ascii). The output is
byte-identical to protocol.encode_message (tests/test_handler.py checks it
for arbitrary text); anything but str fields falls back to it.
"""

import zlib
from json.encoder import encode_basestring_ascii
from typing import Optional, Union

from loghog.protocol import FLAG_ACK_REQUEST, FLAG_ZLIB, HEADER, VERSION, encode_message, sign


class RecordEncoder:
    """Turns (module, stamp, nsecs, body) into a whole version-1 frame for one app and host."""

    def __init__(self, app_id: str, hostname: str, secret: Union[str, bytes, None] = None,
                 compress: bool = False) -> None:
        self.app_id = app_id
        self.hostname = hostname
        self.secret = secret
        self.compress = compress
        self._templated = isinstance(app_id, str) and isinstance(hostname, str)
        self._ack_client: Optional[str] = None
        self._ack_field = ''
        if self._templated:
            self._head = '{"version": %d, "app_id": %s, "module": ' % (VERSION, encode_basestring_ascii(app_id))
            self._host = ', "hostname": %s, "body": ' % encode_basestring_ascii(hostname)

    def encode(self, module: str, stamp: int, nsecs: int, body: str, client_id: Optional[str] = None,
               seq: Optional[int] = None, caps: Optional[str] = None) -> bytes:
        """One frame; with `client_id` and `seq` it asks for an acknowledgement (protocol 1.1),
        with `caps` also for the server's capabilities (protocol 1.2, once per connection)."""
        if caps is not None or not (self._templated and type(module) is str and type(body) is str
                and type(stamp) is int and type(nsecs) is int
                and (client_id is None or (type(client_id) is str and type(seq) is int))):
            return encode_message(self.app_id, module, stamp, nsecs, self.hostname, body,
                                  self.secret, self.compress, client_id, seq, caps)
        if client_id is None:
            payload = '%s%s, "stamp": %d, "nsecs": %d%s%s' % (
                self._head, encode_basestring_ascii(module), stamp, nsecs, self._host, encode_basestring_ascii(body))
            flags = 0
        else:
            if client_id != self._ack_client:
                self._ack_client = client_id
                self._ack_field = ', "client_id": %s, "seq": ' % encode_basestring_ascii(client_id)
            payload = '%s%s, "stamp": %d, "nsecs": %d%s%s%s%d' % (
                self._head, encode_basestring_ascii(module), stamp, nsecs, self._host, encode_basestring_ascii(body),
                self._ack_field, seq)
            flags = FLAG_ACK_REQUEST
        if self.secret is not None:
            payload += ', "signature": "%s"}' % sign(self.secret, self.app_id, module, stamp, nsecs, body)
        else:
            payload += '}'
        data = payload.encode('ascii')
        if self.compress:
            data = zlib.compress(data)
            flags |= FLAG_ZLIB
        return HEADER.pack(len(data), flags) + data

