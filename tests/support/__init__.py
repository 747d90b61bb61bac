"""Helpers shared by the tests, imported as ``tests.support.<module>``:

* ``db`` — the server databases (a private scratch database per run), and reading back what a tracker stored
  through a Store of our own (``stored_rows``, ``all_rows``, ``reservations``, counters against rows);
* ``rows`` — usage rows built by hand (``hand_rows``, ``random_rows``, ``seed_row``) and stored via ``insert``;
* ``wire`` — what the fake server sent, and what a row must say about it;
* ``limits`` — the limit tests' clock, ids, models.json documents and seeding;
* ``faults`` — a TCP proxy that cuts a database off; ``exports`` — parsing exports back;
* ``reliability`` — child processes and counts for tests/reliability; ``workers/`` — the scripts run in them.
"""
