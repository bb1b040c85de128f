"""Every @task of the pipeline, one per module, and the artifacts they publish (artifacts.py).

A task unpacks its part of the configuration, calls the plain library
(dreambooth_core), logs a line and returns something small. Cache keys name the
layout of the classes they pickle (`RESULTS`): bump it when those move."""

from dreambooth_core.hashing import digest

RESULTS = "v3"


def session_cache_key(plan, step: int, precision: str | None = None) -> str:
    """The cache key of a result of training `plan`: its checkpoint at `step`, or with `precision` its
    export; with the run whose commit in the session holds it, or this run when none does (then the
    result is this run's to make). A result cached by a run whose checkpoint or export is gone can
    never match again: the session decides what is done (plan.done), the cache only remembers it."""
    done_by = plan.done.done_by(step, precision) or plan.done.run
    return digest([RESULTS, plan.session.uid, plan.fingerprint, step, precision, done_by])
