"""The audioLIME paper's published numbers (Haunschmid, Manilow & Widmer, MML 2020, Fig. 2) and
which of its models each of our taggers is compared with. Changes only if the reference changes."""

from __future__ import annotations

# Figure 2 of the paper (k = 3, 5, 7, 9, 11), read off the published table.
PAPER_KS = (3, 5, 7, 9, 11)
PAPER = {
    "FCN": {"audiolime": (.46, .55, .61, .71, .79), "slime": (.37, .43, .46, .52, .54),
            "random": (.24, .22, .22, .22, .21)},
    "SampleCNN": {"audiolime": (.34, .40, .49, .60, .68), "slime": (.11, .20, .22, .23, .25),
                  "random": (.18, .17, .16, .14, .10)},
}
PAPER_MODEL = {"fcn-msd": "FCN"}  # which paper model a tagger corresponds to (musicnn: none)
# the nearest paper model to draw as a dashed reference (musicnn: a short-window model, like SampleCNN)
NEAREST_PAPER_MODEL = {"fcn-msd": "FCN", "musicnn-msd": "SampleCNN"}
