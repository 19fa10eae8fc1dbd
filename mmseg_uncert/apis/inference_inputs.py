"""What an inference run reads and where it writes: images, folders of
images, videos, and the output folder, each checked with an error that names
the file."""
from __future__ import annotations

import os
import os.path as osp
import tempfile
from typing import Any, Iterable, Iterator, Sequence, Union

import cv2
import mmcv
import mmengine.fileio as fileio
import numpy as np

#: file extensions read as images (what OpenCV decodes)
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp',
                    '.ppm', '.pgm', '.pbm', '.jp2')
#: file extensions read as videos, frame by frame (mmcv.VideoReader)
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg',
                    '.mpeg', '.wmv')

#: one image: a file path, or a decoded (H, W[, 3]) BGR array as mmcv reads it
ImageInput = Union[str, np.ndarray]


class InferenceInputError(ValueError):
    """An input or output path that inference cannot use (the message names
    it and says what to do)."""


def is_video(path: str) -> bool:
    return osp.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def is_image(path: str) -> bool:
    return osp.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def find_images(folder: str) -> list[tuple[str, str]]:
    """(name, path) of every image under ``folder``, recursively, sorted by
    name;
    the name is the path relative to ``folder`` without its extension, so
    that images of different subfolders keep apart.

    Raises:
        InferenceInputError: no image in the folder, or two images with one
            name (``a.png`` and ``a.jpg``).
    """
    found: dict[str, str] = {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for file in sorted(files):
            if not is_image(file):
                continue
            path = osp.join(root, file)
            name = osp.splitext(osp.relpath(path, folder))[0]
            if name in found:
                raise InferenceInputError(
                    f'{found[name]} and {path} would both be written as '
                    f'{name!r}: rename one, or give them one at a time')
            found[name] = path
    if not found:
        raise InferenceInputError(
            f'no image under {folder} (looked for {", ".join(IMAGE_EXTENSIONS)}, '
            f'recursively)')
    return sorted(found.items())


def open_video(path: str) -> mmcv.VideoReader:
    """The video at ``path``, or an error naming it."""
    if not osp.isfile(path):
        raise InferenceInputError(f'video {path} does not exist')
    try:
        reader = mmcv.VideoReader(path)
    except (OSError, cv2.error) as error:
        raise InferenceInputError(f'cannot open the video {path}: {error}') from error
    if not reader.opened:
        raise InferenceInputError(f'cannot open the video {path} (no codec for '
                                  f'it in OpenCV?)')
    return reader


def video_frames(path: str) -> Iterator[tuple[str, np.ndarray]]:
    """(``<video stem>_<frame index:06d>``, BGR frame) for every frame, one
    at a time (a video is never held in memory)."""
    reader = open_video(path)
    stem = osp.splitext(osp.basename(path))[0]
    for index, frame in enumerate(reader):
        yield f'{stem}_{index:06d}', frame


def named_inputs(inputs: ImageInput | Iterable[ImageInput],
                 names: Sequence[str] | None = None
                 ) -> Iterator[tuple[str | None, ImageInput]]:
    """(name, image) for each image that ``inputs`` stands for.

    ``inputs``: an image path, a folder (its images, see
    :func:`find_images`), a video path (its frames, see
    :func:`video_frames`), a BGR array, or a sequence of those. An image
    file's name is its stem (``dir/a.png`` → ``a``); an array's is
    ``names[i]`` where ``names`` gives one per input, else None (the caller
    numbers it).

    Raises:
        InferenceInputError: a path that does not exist or is neither an
            image, a video nor a folder; ``names`` of the wrong length; two
            inputs of one name (their files would overwrite each other).
    """
    seen: dict[str, ImageInput] = {}
    for name, image in _named_inputs(inputs, names):
        # two inputs of one name would write the same files
        if name is not None and name in seen:
            first = seen[name] if isinstance(seen[name], str) else 'an array'
            other = image if isinstance(image, str) else 'an array'
            raise InferenceInputError(
                f'two inputs are both named {name!r} ({first} and {other}), so '
                f'their files would overwrite each other: rename one, or give '
                f'the folder that holds both')
        if name is not None:
            seen[name] = image
        yield name, image


def _named_inputs(inputs: ImageInput | Iterable[ImageInput],
                  names: Sequence[str] | None
                  ) -> Iterator[tuple[str | None, ImageInput]]:
    items = [inputs] if isinstance(inputs, (str, np.ndarray)) else list(inputs)
    if names is not None and len(names) != len(items):
        raise InferenceInputError(f'{len(names)} names for {len(items)} inputs: '
                                  f'give one name per input')
    for index, item in enumerate(items):
        given = names[index] if names is not None else None
        if isinstance(item, np.ndarray):
            yield given, item
        elif not isinstance(item, str):
            raise InferenceInputError(f'input {index} is a {type(item).__name__}; '
                                      f'give a path or a BGR numpy array')
        elif osp.isdir(item):
            yield from find_images(item)
        elif is_video(item):
            yield from video_frames(item)
        elif not osp.exists(item):
            raise InferenceInputError(f'input {item} does not exist')
        elif is_image(item):
            yield given or osp.splitext(osp.basename(item))[0], item
        else:
            raise InferenceInputError(
                f'input {item} is neither an image ({", ".join(IMAGE_EXTENSIONS)}), '
                f'a video ({", ".join(VIDEO_EXTENSIONS)}) nor a folder')


def count_images(inputs: ImageInput | Iterable[ImageInput]) -> int:
    """How many images :func:`named_inputs` yields, without decoding any
    (a video's frame count is the one its header gives)."""
    items = [inputs] if isinstance(inputs, (str, np.ndarray)) else list(inputs)
    count = 0
    for item in items:
        if isinstance(item, str) and osp.isdir(item):
            count += len(find_images(item))
        elif isinstance(item, str) and is_video(item):
            count += open_video(item).frame_cnt
        else:
            count += 1
    return count


def read_image(path: str, color_type: str = 'color',
               imdecode_backend: str = 'cv2',
               backend_args: dict[str, Any] | None = None) -> np.ndarray:
    """The image at ``path`` decoded as mmcv's ``LoadImageFromFile`` decodes
    it (BGR), or an error naming the file where it cannot be read."""
    try:
        content = fileio.get(path, backend_args=backend_args)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        raise InferenceInputError(f'cannot read the image {path}: {error}') from error
    try:
        img = mmcv.imfrombytes(content, flag=color_type, backend=imdecode_backend)
    except (cv2.error, OSError, ValueError) as error:  # cv2's, PIL's, turbojpeg's
        raise InferenceInputError(
            f'cannot decode {path} as an image ({error}); is the file complete?'
        ) from error
    if img is None:
        raise InferenceInputError(
            f'cannot decode {path} as an image ({len(content)} bytes that '
            f'{imdecode_backend} does not recognise); is the file complete?')
    return img


def check_out_dir(path: str) -> str:
    """Create ``path`` if needed and make sure a file can be written in it.

    Raises:
        InferenceInputError: it cannot be created or written to (names it).
    """
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise InferenceInputError(
            f'cannot write to the output folder {path} ({error.strerror or error}); '
            f'give a folder you can write to') from error
    return path
