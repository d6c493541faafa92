"""The Textual screen (the only part of scalemon that imports textual)."""
