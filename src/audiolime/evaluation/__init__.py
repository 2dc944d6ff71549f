"""The audioLIME paper's evaluation: audioLIME vs SLIME vs random (not shipped in the service images)."""
