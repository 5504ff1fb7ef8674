"""``python -m podrun.runtime BUNDLE``: run one job bundle inside a pod."""

import sys

from .executor import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
