"""Question images: the one place that finds a question's image file and checks it against the store.

The teacher client sends the bytes (base64) and the student reads them as a PIL image; both
go through `question_image`, so a file that changed since import (its sha256 no longer the
one stored on the question) is refused in one way everywhere. PIL is imported only when an
image is opened.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ImageError


@dataclass(frozen=True)
class ImageFile:
    path: Path
    data: bytes
    sha256: str

    @property
    def media_type(self) -> str:
        return mimetypes.guess_type(str(self.path))[0] or "image/png"

    def open(self) -> Any:
        """The image as an RGB PIL image (needs pillow)."""
        import io

        from PIL import Image

        return Image.open(io.BytesIO(self.data)).convert("RGB")


def load_image(path: str | Path | None, sha256: str | None = None) -> ImageFile | None:
    """The file at `path`, or None when there is no path or no such file (the question is then
    used text only); raises ImageError when `sha256` is given and the bytes do not match it."""
    if not path or not Path(path).is_file():
        return None
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 and digest != sha256:
        raise ImageError(f"image {path} changed since import (sha256 {digest[:12]}, store has {sha256[:12]})")
    return ImageFile(Path(path), data, digest)


def question_image(question: Any) -> ImageFile | None:
    """A question's (or an exported row's) image, checked against its stored sha256."""
    if isinstance(question, dict):
        return load_image(question.get("image"), question.get("image_sha256"))
    return load_image(question.image_path, getattr(question, "image_sha256", None))
