"""The original FCN, CRNN and Musicnn of minzwon/sota-music-tagging-models in PyTorch, the references for their exports.

torchaudio is not needed: MelSpectrogram (Spectrogram n_fft 512, hop 256, power 2, centred with
reflect padding, the stored Hann window; MelScale with the stored filterbank) and AmplitudeToDB
(power, amin 1e-10, ref 1, top_db None) are re-implemented with torch ops and keep the
checkpoint's parameter names (``spec.spectrogram.window``, ``spec.mel_scale.fb``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from audiolime.tagger import crnn_graph, musicnn_pt_graph
from audiolime.tagger.fcn_graph import AMIN, DB_MULTIPLIER, HOP, N_FFT, N_MELS, POOLS
from audiolime.tagger.labels import MSD_LABELS


class Spectrogram(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT))

    def forward(self, x):
        spec = torch.stft(
            x, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, window=self.window,
            center=True, pad_mode="reflect", normalized=False, onesided=True,
            return_complex=True,
        )
        return spec.abs().pow(2.0)


class MelScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("fb", torch.zeros(N_FFT // 2 + 1, N_MELS))

    def forward(self, spec):  # [B, freq, time] -> [B, mel, time]
        return torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)


class MelSpectrogram(nn.Module):
    def __init__(self):
        super().__init__()
        self.spectrogram = Spectrogram()
        self.mel_scale = MelScale()

    def forward(self, x):
        return self.mel_scale(self.spectrogram(x))


class AmplitudeToDB(nn.Module):
    def forward(self, x):
        # multiplier 10 (power), amin 1e-10, ref 1.0 -> db_multiplier 0, top_db None
        return DB_MULTIPLIER * torch.log10(torch.clamp(x, min=AMIN))


class Conv2d(nn.Module):
    def __init__(self, cin, cout, pooling):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=1, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.mp = nn.MaxPool2d(pooling)

    def forward(self, x):
        return self.mp(self.relu(self.bn(self.conv(x))))


class FCN(nn.Module):
    def __init__(self, n_class=50):
        super().__init__()
        self.spec = MelSpectrogram()
        self.to_db = AmplitudeToDB()
        self.spec_bn = nn.BatchNorm2d(1)
        chans = [1, 64, 128, 128, 128, 64]
        for i, pool in enumerate(POOLS):
            setattr(self, f"layer{i + 1}", Conv2d(chans[i], chans[i + 1], pool))
        self.dense = nn.Linear(64, n_class)
        self.dropout = nn.Dropout(0.5)

    def spectrogram(self, x):
        """[B, samples] -> dB mel spectrogram [B, mel, time] (before spec_bn)."""
        return self.to_db(self.spec(x))

    def from_spectrogram(self, s):
        x = s.unsqueeze(1)
        x = self.spec_bn(x)
        for i in range(len(POOLS)):
            x = getattr(self, f"layer{i + 1}")(x)
        x = x.view(x.size(0), -1)
        x = self.dropout(x)
        x = self.dense(x)
        return torch.sigmoid(x)

    def forward(self, x):
        return self.from_spectrogram(self.spectrogram(x))


class CRNN(nn.Module):
    """The repository's CRNN: 4 conv blocks, nn.GRU(128, 32, 2, batch_first=True), last step, dense."""

    def __init__(self, n_class=50):
        super().__init__()
        self.spec = MelSpectrogram()
        self.to_db = AmplitudeToDB()
        self.spec_bn = nn.BatchNorm2d(1)
        chans = [1, 64, 128, 128, 128]
        for i, pool in enumerate(crnn_graph.POOLS):
            setattr(self, f"layer{i + 1}", Conv2d(chans[i], chans[i + 1], pool))
        self.layer5 = nn.GRU(128, 32, 2, batch_first=True)
        self.dropout = nn.Dropout(0.5)
        self.dense = nn.Linear(32, n_class)

    def spectrogram(self, x):
        return self.to_db(self.spec(x))

    def from_spectrogram(self, s):
        x = self.spec_bn(s.unsqueeze(1))
        for i in range(len(crnn_graph.POOLS)):
            x = getattr(self, f"layer{i + 1}")(x)
        x = x.squeeze(2).permute(0, 2, 1)
        x, _ = self.layer5(x)
        x = self.dense(self.dropout(x[:, -1, :]))
        return torch.sigmoid(x)

    def forward(self, x):
        return self.from_spectrogram(self.spectrogram(x))


class ConvV(nn.Module):
    def __init__(self, cout, shape):
        super().__init__()
        self.conv = nn.Conv2d(1, cout, shape, padding=(0, shape[1] // 2))
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return nn.functional.max_pool2d(x, (x.size(2), 1)).squeeze(2)


class ConvH(nn.Module):
    def __init__(self, cout, length):
        super().__init__()
        self.conv = nn.Conv1d(1, cout, length, padding=length // 2)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x):
        x = nn.functional.avg_pool2d(x, (x.size(2), 1)).squeeze(2)
        return torch.relu(self.bn(self.conv(x)))


class Conv1d(nn.Module):
    def __init__(self, cin, cout, k):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, padding=k // 2)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Musicnn(nn.Module):
    """The repository's Musicnn (MTAT/MTG-Jamendo sizes: back end 64, dense 200) on 3 s windows."""

    def __init__(self, n_class=50):
        super().__init__()
        self.spec = MelSpectrogram()
        self.to_db = AmplitudeToDB()
        self.spec_bn = nn.BatchNorm2d(1)
        self.layers = nn.ModuleList([ConvV(204, (int(0.7 * 96), 7)), ConvV(204, (int(0.4 * 96), 7)),
                                     ConvH(51, 129), ConvH(51, 65), ConvH(51, 33)])
        self.layer1 = Conv1d(561, 64, 7)
        self.layer2 = Conv1d(64, 64, 7)
        self.layer3 = Conv1d(64, 64, 7)
        self.dense1 = nn.Linear((561 + 64 * 3) * 2, 200)
        self.bn = nn.BatchNorm1d(200)
        self.dense2 = nn.Linear(200, n_class)

    def spectrogram(self, x):
        return self.to_db(self.spec(x))

    def from_spectrogram(self, s):
        x = self.spec_bn(s.unsqueeze(1))
        out = torch.cat([layer(x) for layer in self.layers], dim=1)
        res1 = self.layer1(out)
        res2 = self.layer2(res1) + res1
        res3 = self.layer3(res2) + res2
        out = torch.cat([out, res1, res2, res3], 1)
        out = torch.cat([out.amax(dim=2), out.mean(dim=2)], dim=1)
        out = torch.relu(self.bn(self.dense1(out)))
        return torch.sigmoid(self.dense2(out))

    def forward(self, x):
        return self.from_spectrogram(self.spectrogram(x))


def _load(model: nn.Module, state_dict: Mapping[str, Any]) -> nn.Module:
    tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in state_dict.items()}
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return model


def build_torch_fcn(state_dict: Mapping[str, Any]) -> FCN:
    """The FCN with ``state_dict`` (numpy arrays or tensors) loaded strictly, in eval mode."""
    return _load(FCN(n_class=len(MSD_LABELS)), state_dict)


def build_torch_crnn(state_dict: Mapping[str, Any]) -> CRNN:
    """The CRNN with ``state_dict`` loaded strictly, in eval mode."""
    return _load(CRNN(n_class=50), state_dict)


def build_torch_musicnn(state_dict: Mapping[str, Any]) -> Musicnn:
    """The Musicnn (MTAT/MTG-Jamendo) with ``state_dict`` loaded strictly, in eval mode."""
    assert musicnn_pt_graph.WINDOW_SAMPLES == 48_000
    return _load(Musicnn(n_class=50), state_dict)


def build_torch(arch: str, state_dict: Mapping[str, Any]) -> nn.Module:
    """The PyTorch original of ``arch`` (fcn, crnn, musicnn) with ``state_dict``."""
    return {"fcn": build_torch_fcn, "crnn": build_torch_crnn, "musicnn": build_torch_musicnn}[arch](state_dict)
