"""A starter jobtape app: one pure-Python job type and one that runs a child process (see ../README.md)."""
