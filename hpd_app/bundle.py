"""The exported set as one zip for the browser's download, written inside the run folder."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

EXPORTED = ("synthetic.pt", "grid.png", "export.json")


def zip_export(run_dir: Path) -> Path:
    """RUN_DIR/export.zip holding synthetic.pt, grid.png, export.json and images/; replaced atomically."""
    run_dir = Path(run_dir)
    target = run_dir / "export.zip"
    tmp = run_dir / ".export.zip.tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in EXPORTED:
            if (run_dir / name).is_file():
                zf.write(run_dir / name, name)
        images = run_dir / "images"
        if images.is_dir():
            for path in sorted(images.rglob("*")):
                if path.is_file():
                    zf.write(path, str(path.relative_to(run_dir)))
    os.replace(tmp, target)
    return target
