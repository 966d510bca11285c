"""Workers: claim jobs, run their job handlers and child processes, heartbeat, reap expired leases."""
