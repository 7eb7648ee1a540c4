"""The records that cross the process boundary between the front end and the workers.

A job is one message as the SMTP session received it; its result is what goes to the
spool: one or more recipient groups, each with the bytes to deliver to them (the crypto
work of later stages splits recipients by certificate), or a refusal that becomes the
session's reply. Only these small frozen records cross processes (STYLE.md habit 6).

The job function is pluggable: workers import it by name ("module:function") so the
spawned processes need nothing pickled but the name.
"""

from __future__ import annotations

import copyreg
import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.envelope import Envelope, Reply


@dataclass(frozen=True, slots=True)
class Job:
    """One message to process: its envelope and its content (CRLF line ends, unstuffed)."""

    envelope: Envelope
    data: bytes
    # The queue ID its first output will have (gateway/handoff.py), or of the queued copy
    # that is processed again: the worker's log lines carry it (issue 6, item 5).
    queue_id: str = ""


@dataclass(frozen=True, slots=True)
class Output:
    """What to queue for one group of recipients.

    `refused` set: the job could not make this group's copy (e.g. no certificate and
    the fallback "defer"), but other groups of the message went on, so the message is
    accepted: `data` is then the original message, queued so that delivery retries the
    job later (a 4yz) or bounces these recipients (a 5yz). It is never sent as it is.
    """

    rcpt_tos: tuple[str, ...]
    data: bytes
    require_tls: bool = False  # the "tls-only" fallback: verified TLS to the next hop
    refused: Reply | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """A job's outcome: outputs to queue, or a refusal reply for the SMTP session."""

    outputs: tuple[Output, ...] = ()
    refusal: Reply | None = None
    # Ids of quarantine entries the job wrote (gateway/inbound/quarantine.py): those
    # recipients' copy is kept there, not queued; the session still gets 250.
    quarantined: tuple[str, ...] = ()
    # Metric increments the job made, (counter name, label values, amount): a worker's
    # own registry is never scraped, so the pool hands these to its on_counts hook.
    counts: tuple[tuple[str, tuple[str, ...], float], ...] = ()
    # Signer certificates of verified inbound mail ([inbound] harvest): (From address,
    # DER chain, signer first) for the front end to offer to its CertificateResolver.
    harvested: tuple[tuple[str, tuple[bytes, ...]], ...] = ()
    # SMIMECapabilities of verified inbound mail ([inbound] learn_capabilities): (address
    # or domain, algorithm OIDs, signing time) for CertificateResolver.offer_capabilities.
    capabilities: tuple[tuple[str, tuple[str, ...], float], ...] = ()


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """What a worker reports with each batch's results (for metrics)."""

    pid: int
    busy_seconds: float  # wall time spent running the batch's jobs
    cpu_seconds: float  # process CPU time spent on them
    failed: int  # jobs whose function raised


JobFunction = Callable[[Job], Result]


def _pickle_by_fields(cls: type[Any]) -> None:
    """Pickle instances of a frozen slots dataclass as cls(*fields).

    The default for such classes goes through Python-level __getstate__/__setstate__ (one
    object.__setattr__ per field): ~7 us per Job with its Envelope, paid on the front
    end's event loop for every message. As a constructor call with positional fields,
    pickle does it in C (< 1 us). Every field must be an __init__ argument."""
    names = tuple(f.name for f in dataclasses.fields(cls))
    if not all(f.init for f in dataclasses.fields(cls)):
        raise TypeError(f"{cls.__name__} has a field that is not an __init__ argument")

    def reduce(obj: Any) -> tuple[type[Any], tuple[Any, ...]]:
        return cls, tuple([getattr(obj, n) for n in names])

    copyreg.pickle(cls, reduce)


for _record in (Envelope, Reply, Job, Output, Result, WorkerStats):
    _pickle_by_fields(_record)

IDENTITY = "gateway.workers.jobs:identity"


def identity(job: Job) -> Result:
    """The relay's job until the crypto stages plug in: the message passes unchanged."""
    return Result(outputs=(Output(job.envelope.rcpt_tos, job.data),))


def resolve(name: str) -> JobFunction:
    """The job function called `name` ("package.module:function")."""
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"job function must be written module:function, got {name!r}")
    function = getattr(importlib.import_module(module_name), attr, None)
    if not callable(function):
        raise ValueError(f"{name!r} is not a function")
    return function  # type: ignore[no-any-return]
