"""Job functions for the worker pool tests, imported by name in the worker processes.

`behave` does what the first line of the message that is a command says (so a Received
header put in front changes nothing): CRASH-ONCE:<path> (the worker dies
unless <path> exists, which it creates first, so only the first run crashes), POISON
(the worker always dies), SLEEP:<seconds>, RAISE (the function raises); anything else
passes unchanged. Each output is prefixed with the worker's pid so tests see who ran it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from gateway.workers.jobs import Job, Output, Result


def behave(job: Job) -> Result:
    commands = (b"CRASH-ONCE:", b"POISON", b"SLEEP:", b"RAISE")
    first = next((line for line in job.data.split(b"\r\n") if line.startswith(commands)), b"")
    if first.startswith(b"CRASH-ONCE:"):
        marker = Path(first.split(b":", 1)[1].decode())
        if not marker.exists():
            marker.touch()
            os._exit(3)
    elif first == b"POISON":
        os._exit(3)
    elif first.startswith(b"SLEEP:"):
        time.sleep(float(first.split(b":", 1)[1]))
    elif first == b"RAISE":
        raise ValueError("this job function fails")
    tagged = b"%d " % os.getpid() + job.data
    return Result(outputs=(Output(job.envelope.rcpt_tos, tagged),))
