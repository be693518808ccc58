"""Writes blender_addon/generated/params.json from backend/params.py: the add-on's copy of every
parameter's default, range, choices and help text, and of the map names (the add-on cannot import
backend/, so it reads this file when it registers).

    .venv/bin/python scripts/params_spec.py           write it (after changing backend/params.py)
    .venv/bin/python scripts/params_spec.py --check   exit 1 when the checked-in file differs
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "blender_addon" / "generated" / "params.json"
COMMAND = ".venv/bin/python scripts/params_spec.py"


def render() -> str:
    sys.path.insert(0, str(ROOT))
    from backend.params import declarations

    header = {"generated": f"from backend/params.py by {COMMAND}; do not edit"}
    return json.dumps(header | declarations(), indent=1) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET.relative_to(ROOT)} differs from backend/params.py: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    temp = TARGET.with_name(f".{TARGET.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    temp.replace(TARGET)
    print(TARGET.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
