"""The cost-savings benchmark behind ``scripts/benchmark.py``: replays a workload against the
service under three cache configurations and reports what the caches save.

``workload`` makes the questions, ``replay`` sends them (``records`` reads each answer,
``memory`` measures Redis), ``summary`` turns records into figures, ``report`` and ``charts``
write them out, and ``cli`` ties it together."""
