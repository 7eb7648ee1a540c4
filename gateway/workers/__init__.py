"""The multiprocess processing stage between DATA and the 250 (see pool.py)."""

from gateway.workers.jobs import IDENTITY, Job, JobFunction, Output, Result, WorkerStats
from gateway.workers.pool import MAX_ATTEMPTS, WorkerPool

__all__ = ["IDENTITY", "MAX_ATTEMPTS", "Job", "JobFunction", "Output", "Result", "WorkerPool",
           "WorkerStats"]
