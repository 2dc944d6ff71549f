"""audioLIME: the method (numpy + scikit-learn only)."""
