"""audiolime explainer."""
