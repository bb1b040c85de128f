"""Every @task of the pipeline, one per module, and the artifacts they publish (artifacts.py).

A task unpacks its part of the configuration, calls the plain library
(dreambooth_core), logs a line and returns something small. Cache keys name the
layout of the classes they pickle (`RESULTS`): bump it when those move."""

RESULTS = "v2"
