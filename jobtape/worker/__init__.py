"""Workers: claim jobs, run their pipelines and child processes, heartbeat, reap expired leases."""
