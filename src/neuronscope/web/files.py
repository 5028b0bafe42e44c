"""Which files of an atlas the microscope serves: images under its image folders, nothing else.

The catalogue, arrays and checkpoints stay private; a request path is refused
(``None``, answered 404) when it is absolute, has an empty, ``.`` or ``..``
segment, leaves the allowed folders, is not an image, or resolves (through
a symlink) outside the atlas.
"""

from __future__ import annotations

from pathlib import Path

#: Atlas folders whose files pages show.
SERVED_FOLDERS = ("thumbs", "featurevis", "artifacts")
#: File types served, with their media type.
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
               ".webp": "image/webp", ".gif": "image/gif"}


def atlas_file(atlas_root: Path, relative: str) -> Path | None:
    """The file an atlas-relative request path names, or None when it must not be served.

    Args:
        atlas_root: the atlas directory, already ``resolve()`` d.
        relative: the path as requested (percent-decoded), e.g. ``thumbs/abc_1f2e3d4c_g2x2_r0c1.png``.
    """
    if not relative or relative.startswith(("/", "\\")) or "\\" in relative or "\x00" in relative:
        return None
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts) or parts[0] not in SERVED_FOLDERS:
        return None
    if not is_image(parts[-1]):
        return None
    try:
        resolved = (atlas_root / relative).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    # A symlink may point anywhere: what counts is where it lands.
    if not resolved.is_relative_to(atlas_root / parts[0]) or not resolved.is_file():
        return None
    return resolved


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")


def is_image(name: str) -> bool:
    """Whether a file name is of a type pages show as an image (and the server serves)."""
    return Path(name).suffix.lower() in MEDIA_TYPES
