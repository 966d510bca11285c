"""The pure fold over a job's events and the projections written in the same batch as each append."""
