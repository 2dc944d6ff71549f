"""audiolime tagger."""
