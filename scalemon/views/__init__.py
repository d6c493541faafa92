"""The views that read only a Summary: `headless` (status lines and reports) and `text` (the
words both it and the screen, scalemon.tui, use)."""
