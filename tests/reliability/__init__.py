"""Faults and load: crashes, outages, contention, leaks, bad input, soak."""
