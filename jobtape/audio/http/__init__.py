"""The audio routes: ingest (upload, URL, direct upload), edit preview and save, the preview audio."""
