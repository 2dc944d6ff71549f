"""The audioLIME paper's evaluation: audioLIME vs SLIME vs random (not shipped in the service images).

- :mod:`~audiolime.evaluation.config` -- the settings of a run and their validation
- :mod:`~audiolime.evaluation.plan` -- songs, windows per song and their placement, item seeds
- :mod:`~audiolime.evaluation.checkpoint` -- ``items.jsonl`` + ``config.json`` (resumable runs)
- :mod:`~audiolime.evaluation.experiment` -- one item (:func:`evaluate_window`) and the run loop
- :mod:`~audiolime.evaluation.slime`, :mod:`~audiolime.evaluation.baselines` -- the compared methods
- :mod:`~audiolime.evaluation.aggregate` -- rates with Wilson intervals
- :mod:`~audiolime.evaluation.outputs`, :mod:`~audiolime.evaluation.figure` -- results.csv/json/md, figure2.png
- :mod:`~audiolime.evaluation.paper` -- the paper's published numbers
"""
