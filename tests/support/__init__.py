"""Helpers shared by the tests: rows built by hand (``rows``), what the fake server sent (``wire``), databases
(``db``), network faults (``faults``) and export parsing (``exports``)."""
