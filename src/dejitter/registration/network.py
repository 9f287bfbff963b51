"""Step C by network: the residual network of Fu et al. (2021) and its inference.

The network reads a (raw projection, reprojection) pair as a two-channel image and regresses
the jitter ``(dx, dy)`` of the raw projection, in pixels of the network input.

Normalisation is ``GroupNorm(1, C)``, i.e. layer normalisation over (channels, height, width) of
each sample.  Unlike batch normalisation it uses no batch statistics, so one pair gives the same
answer alone as inside any batch, in training and inference alike.  Each pair is also
standardised on its own (:func:`prepare_pairs`), never with its neighbours.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..binning import bin_projections
from ..files import sha256sum
from ..reconstruction.projectors import default_device
from ..types import ModelError

__all__ = ["DejitterNet", "prepare_pairs", "predict_jitter", "load_model", "save_model", "ModelError",
           "input_factor", "trained_amplitude", "read_card", "reference_mode"]


def _norm(channels):
    return nn.GroupNorm(1, channels)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection (ResNet basic block)."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = _norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.skip = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                      _norm(out_channels))

    def forward(self, x):
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.skip(x))


class DejitterNet(nn.Module):
    """7x7/2 convolution, max-pool, three residual stages (64, 128, 256 channels, each /2),
    global average pooling, linear layer to (dx, dy).

    Parameters
    ----------
    input_size : int
        Edge of the square two-channel input.
    output_scale : float
        The linear layer predicts ``shift / output_scale``, keeping targets near unit size.
    references : {'full', 'leave_out'}
        The references the model reads (see :func:`dejitter.registration.references.reference_projections`):
        those it was trained on, recorded in its card.
    """

    def __init__(self, input_size=64, output_scale=10.0, references="full"):
        super().__init__()
        self.input_size = int(input_size)
        self.references = references
        self.register_buffer("output_scale", torch.tensor(float(output_scale)))
        self.stem = nn.Sequential(nn.Conv2d(2, 64, 7, 2, 3, bias=False), _norm(64), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        self.stage1 = nn.Sequential(BasicBlock(64, 64, 2), BasicBlock(64, 64))
        self.stage2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.stage3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(256, 2)

    def forward(self, pairs):
        """``pairs (N, 2, S, S)`` to jitter ``(N, 2)`` = (dx, dy) in input pixels."""
        x = self.stage3(self.stage2(self.stage1(self.stem(pairs))))
        return self.head(torch.flatten(self.pool(x), 1)) * self.output_scale


def input_factor(image_shape, input_size):
    """Integer binning that fits images of ``image_shape`` (rows, columns) into the network input."""
    return max(1, math.ceil(max(image_shape) / input_size))


def trained_amplitude(card, image_shape):
    """Largest jitter the model saw in training, in pixels of images of ``image_shape`` fed to it.

    The card records it in pixels of the training scans, which steps A-C binned and
    :func:`prepare_pairs` fitted into the input; the same chain maps it onto other images.
    """
    amplitude = card.get("trained_amplitude_px_input")
    if amplitude is None:
        return None
    conditions = card.get("training_data", {}).get("conditions", {})
    binning = conditions.get("binning", 1)
    size = conditions.get("size")
    input_size = card.get("input_size", 64)
    in_network = amplitude / binning / (input_factor((size / binning,), input_size) if size else 1)
    return in_network * input_factor(image_shape, input_size)


def prepare_pairs(raw, references, input_size):
    """Two-channel network inputs from projections and their references.

    Each image is binned by the smallest integer factor that fits it into ``input_size``,
    standardised on its own (zero mean, unit variance), and zero-padded or centre-cropped to
    ``input_size x input_size``.

    Parameters
    ----------
    raw, references : ndarray, shape (angle, row, column)
    input_size : int

    Returns
    -------
    pairs : ndarray, shape (angle, 2, input_size, input_size), float32
    scale : ndarray, shape (2,)
        Input pixels to network pixels: multiply network shifts by ``scale`` (dx, dy).
    """
    n_angles, n_rows, n_cols = raw.shape
    factor = input_factor(raw.shape[1:], input_size)
    stacks = []
    row_factor = 1
    for images in (raw, references):
        binned, row_factor = bin_projections(images, factor)
        mean = binned.mean(axis=(1, 2), keepdims=True)
        std = binned.std(axis=(1, 2), keepdims=True) + 1e-6
        stacks.append((binned - mean) / std)
    pairs = np.stack(stacks, axis=1)
    out = np.zeros((n_angles, 2, input_size, input_size), dtype=np.float32)
    rows, cols = pairs.shape[2:]
    r0, c0 = max(0, (rows - input_size) // 2), max(0, (cols - input_size) // 2)
    cropped = pairs[:, :, r0:r0 + input_size, c0:c0 + input_size]
    pr, pc = (input_size - cropped.shape[2]) // 2, (input_size - cropped.shape[3]) // 2
    out[:, :, pr:pr + cropped.shape[2], pc:pc + cropped.shape[3]] = cropped
    return out, np.array([factor, row_factor], dtype=np.float64)


@torch.no_grad()
def _forward_batched(model, pairs, device, batch_size):
    outputs = []
    for start in range(0, len(pairs), batch_size):
        batch = torch.from_numpy(pairs[start:start + batch_size]).to(device)
        outputs.append(model(batch).double().cpu())
    return torch.cat(outputs).numpy()


def predict_jitter(model, raw, references, *, device=None, batch_size=64, flip_test=True, max_spread=1.0,
                   trained_amplitude=None):
    """Jitter of each projection from the network, with a per-angle confidence.

    Parameters
    ----------
    model : DejitterNet
    raw, references : ndarray, shape (angle, row, column)
        Projections and their (leave-out) reprojections, same resolution.
    device : optional
        Default: CUDA if available, else CPU.
    batch_size : int
    flip_test : bool
        Also evaluate every pair rotated by 180 degrees (both axes flipped, which negates the
        shift).  The estimate is the mean of both; ``spread`` is half their difference.
    max_spread : float
        Angles whose spread exceeds this many pixels (of ``raw``) are flagged.
    trained_amplitude : float, optional
        Largest jitter (pixels of ``raw``) seen in training; larger estimates are flagged,
        never clamped.

    Returns
    -------
    shifts : ndarray, shape (angle, 2)
        Jitter in pixels of ``raw``.
    quality : dict
        ``spread`` (px) and ``flagged`` (bool) per angle.
    """
    device = torch.device(device) if device is not None else default_device()
    model = model.to(device).eval()
    pairs, scale = prepare_pairs(raw, references, model.input_size)
    estimate = _forward_batched(model, pairs, device, batch_size)
    spread = np.zeros(len(pairs))
    if flip_test:
        flipped = -_forward_batched(model, np.ascontiguousarray(pairs[:, :, ::-1, ::-1]), device, batch_size)
        spread = np.hypot(*(estimate - flipped).T) / 2 * scale.max()
        estimate = (estimate + flipped) / 2
    shifts = estimate * scale
    flagged = spread > max_spread
    if trained_amplitude is not None:
        flagged |= np.abs(shifts).max(axis=1) > trained_amplitude
    return shifts, {"spread": spread, "flagged": flagged}


def save_model(model, path, card: dict):
    """Save the weights (state dict) and a JSON card with their sha256 beside them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    card = dict(card, file=path.name, sha256=sha256sum(path), input_size=model.input_size,
                output_scale=float(model.output_scale), references=model.references)
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def reference_mode(card):
    """The references a model was trained on, from its card: ``'full'`` or ``'leave_out'``.

    Cards written before the choice existed describe models trained on leave-out references.
    """
    return card.get("references", "leave_out")


def read_card(path):
    """The JSON card beside the model file ``path`` (``<name>.json``)."""
    path = Path(path)
    card_path = path.with_suffix(".json")
    if not card_path.is_file():
        raise ModelError(f"model card {card_path} is missing; it records the checksum of {path.name}")
    return json.loads(card_path.read_text())


def load_model(path, *, sha256=None, device=None):
    """Load a shipped model after checking its checksum.

    Parameters
    ----------
    path : str or Path
        The ``.pt`` weights; its card ``<name>.json`` must lie beside it.
    sha256 : str, optional
        Expected checksum; default the card's.

    Returns
    -------
    model : DejitterNet (eval mode)
    card : dict
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist (train one with 'snakemake train')")
    card = read_card(path)
    expected = sha256 or card.get("sha256")
    actual = sha256sum(path)
    if actual != expected:
        raise ModelError(f"model file {path} fails its checksum: sha256 {actual[:12]}... but the card "
                         f"records {str(expected)[:12]}...; the file is corrupt or was replaced")
    model = DejitterNet(card["input_size"], card.get("output_scale", 10.0), references=reference_mode(card))
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    if device is not None:
        model.to(device)
    return model, card
