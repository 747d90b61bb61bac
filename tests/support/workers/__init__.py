"""Scripts run in separate processes by the race and reliability tests."""
