"""Small images and half-and-half maps, and a colour check, for the
visualization tests."""
import numpy as np
import torch

H, W = 24, 48


def _halves(left: float, right: float) -> torch.Tensor:
    """A (1, H, W) map: ``left`` on the left half, ``right`` on the right."""
    value = torch.full((1, H, W), float(left))
    value[..., W // 2:] = right
    return value


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _expect_colour(pixels: np.ndarray, rgb) -> None:
    diff = np.abs(pixels.astype(int) - np.asarray(rgb, dtype=int)[:3]).max()
    assert diff <= 1, f'colour off by up to {diff} from {list(rgb)[:3]}'
