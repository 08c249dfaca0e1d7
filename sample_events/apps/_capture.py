"""A sentry_sdk transport that keeps every envelope as the bytes the SDK would put on the wire.

The generator (sample_events/generate.py) runs each sample app with SAMPLE_EVENTS_OUT pointing at
a scratch directory; every envelope the SDK hands to the transport is written there, uncompressed,
as ``envelope.serialize()``. The app sets ``KIND`` before each scenario so the generator can name
the files.
"""

import itertools
import os
import threading
from pathlib import Path

from sentry_sdk.transport import Transport

KIND = "unknown"
_counter = itertools.count(1)
_lock = threading.Lock()


class CaptureTransport(Transport):
    def __init__(self, options=None):
        super().__init__(options)
        self.out_dir = Path(os.environ["SAMPLE_EVENTS_OUT"])
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def capture_envelope(self, envelope):
        body = envelope.serialize()
        with _lock:
            name = f"{next(_counter):04d}-{KIND}.envelope"
            (self.out_dir / name).write_bytes(body)

    def flush(self, timeout, callback=None):
        return None
