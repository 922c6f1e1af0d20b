"""schemathesis hooks of scripts/fuzz-api.sh: every answer's status, by
operation, appended to the file that CORRAL_FUZZ_STATS names (one
`METHOD /path<TAB>status` line per call), so that the script can show that
each operation's success path was reached."""

from __future__ import annotations

import os
import threading

import schemathesis

_LOCK = threading.Lock()
_PATH = os.environ["CORRAL_FUZZ_STATS"]


@schemathesis.hook
def after_call(context, case, response):
    line = f"{case.operation.label}\t{response.status_code}\n"
    with _LOCK, open(_PATH, "a", encoding="utf-8") as out:
        out.write(line)
