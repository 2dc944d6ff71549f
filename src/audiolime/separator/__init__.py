"""audiolime separator."""
