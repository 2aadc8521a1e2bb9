"""One training loop and what it needs: optimizer and schedule, evaluation, costs,
devices and process groups. Knows nothing of run folders or trackers."""
