"""The audio job handlers: ingest, preview, save (ffmpeg and yt-dlp run as recorded child processes)."""
