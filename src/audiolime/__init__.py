"""audiolime: listenable explanations of music taggers (audioLIME as a service).

Importing this package is cheap: nothing here imports TensorFlow or gRPC.
"""

__version__ = "0.1.0"
