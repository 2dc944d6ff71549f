"""Peak memory of decoding a long song: the blockwise decoder vs a whole-file read (one run).

A 10-minute 44.1 kHz stereo FLAC (a shared recording tiled) is decoded in a fresh process per
method; the growth of the process's peak RSS (VmHWM, reset just before) is printed next to the
decoded size:

* ``blockwise``: ``audiolime.audio.decode`` (header checked first, blocks into one float32 buffer);
* ``whole-file``: what the decoder did before: ``soundfile.read`` of everything, a transposed
  contiguous copy, and the RMS as a float64 square of the whole song.

    .venv/bin/python bench/decode_memory.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEASURE = """
import io, os, sys
import numpy as np, soundfile as sf
from audiolime.audio import decode
from audiolime.processes import memory, reset_peak
data = open(sys.argv[1], "rb").read()
rss, _ = memory(os.getpid())
reset_peak(os.getpid())
if sys.argv[2] == "blockwise":
    n = decode(data, "song.flac").waveform.nbytes
else:
    d, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    w = np.ascontiguousarray(d.T)
    float(np.sqrt(np.mean(np.square(w, dtype=np.float64))))
    n = w.nbytes
print(n, memory(os.getpid())[1] - rss)
"""


def main() -> int:
    import numpy as np
    import soundfile as sf

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--song", type=Path, default=Path(os.environ.get("AUDIOLIME_SHARED", REPO.parent / "shared"))
                   / "audio" / "Karissa_Hobbs_-_Lets_Go_Fishin.ogg")
    args = p.parse_args()
    x, sr = sf.read(str(args.song), dtype="float32", always_2d=True)
    n = int(args.minutes * 60 * sr)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.flac"
        sf.write(path, np.tile(x, (n // len(x) + 1, 1))[:n], sr, format="FLAC", subtype="PCM_16")
        print(f"{args.minutes:g} min at {sr} Hz stereo: {path.stat().st_size / 2**20:.0f} MiB of FLAC")
        for method in ("blockwise", "whole-file"):
            out = subprocess.run([sys.executable, "-c", MEASURE, str(path), method], capture_output=True, text=True,
                                 check=True).stdout.split()
            decoded, growth = int(out[0]), int(out[1])
            print(f"{method:10s} decoded {decoded / 2**20:6.0f} MiB  peak RSS growth {growth / 2**20:6.0f} MiB  "
                  f"ratio {growth / decoded:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
