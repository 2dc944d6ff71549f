"""Wire-compatible TF Serving messages (generated from proto/audiolime/tfs)."""
