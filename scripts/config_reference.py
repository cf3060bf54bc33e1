"""Regenerate docs/configuration.md's reference from Pulumi.yaml's config block.

python scripts/config_reference.py          # rewrite docs/configuration.md between the markers
python scripts/config_reference.py --check  # exit 1 when docs/configuration.md is out of date
"""

import sys
from pathlib import Path

from infra.config import REFERENCE_BEGIN, REFERENCE_END, reference_markdown

CONFIGURATION_DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def rendered(text: str) -> str:
    head, _, rest = text.partition(REFERENCE_BEGIN)
    _, _, tail = rest.partition(REFERENCE_END)
    return f"{head}{REFERENCE_BEGIN}\n{reference_markdown()}\n{REFERENCE_END}{tail}"


def main() -> int:
    text = CONFIGURATION_DOC.read_text(encoding="utf-8")
    if REFERENCE_BEGIN not in text or REFERENCE_END not in text:
        print(f"docs/configuration.md has no {REFERENCE_BEGIN} ... {REFERENCE_END} block", file=sys.stderr)
        return 1
    if "--check" in sys.argv:
        if rendered(text) != text:
            print("docs/configuration.md's configuration reference is out of date: python scripts/config_reference.py", file=sys.stderr)
            return 1
        return 0
    CONFIGURATION_DOC.write_text(rendered(text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
